//! `ipvlan-cni`: the ipvlan-rs CNI plugin.
//!
//! Takes the reference ipvlan plugin's network configuration unchanged (`master`, `mode`,
//! `mtu`, `linkInContainer`, `ipam`, `dns`), plus the ipvlan-rs extension `flag`
//! (`bridge`, `private` or `vepa`). The slave is made by the ipvlan-rs daemon (started if
//! none answers), moved into `CNI_NETNS`, renamed to `CNI_IFNAME` and configured with the
//! addresses and routes of the delegated IPAM plugin.

#![forbid(unsafe_code)]

mod cni;
mod daemon;
mod ipam;
mod plugin;

use std::io::{Read, Write};
use std::process::ExitCode;

use cni::{CniError, LATEST, NetConf, code, version_answer, version_of};
use plugin::Env;
use serde_json::Value;

fn print(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, v);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command == "VERSION" {
        let requested = version_of(stdin);
        return Ok(Some(version_answer(requested.as_deref())));
    }
    if env.command.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            "CNI_COMMAND is not set (this is a CNI plugin: a container runtime runs it)",
        ));
    }
    if !matches!(
        env.command.as_str(),
        "ADD" | "DEL" | "CHECK" | "STATUS" | "GC"
    ) {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("unknown CNI_COMMAND {:?}", env.command),
        ));
    }
    let conf = NetConf::parse(stdin)?;
    env.validate(
        matches!(env.command.as_str(), "ADD" | "DEL" | "CHECK") || conf.ipam_type.is_some(),
    )?;
    match env.command.as_str() {
        "ADD" => plugin::add(env, &conf).map(|r| Some(r.to_json(&conf.cni_version))),
        "DEL" => plugin::del(env, &conf).map(|()| None),
        "CHECK" => plugin::check(env, &conf).map(|()| None),
        "STATUS" => plugin::status(&conf).map(|()| None),
        "GC" => plugin::gc(&conf).map(|()| None),
        _ => unreachable!("checked above"),
    }
}

fn main() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    // VERSION may come without a configuration; never wait on a terminal for one.
    let read = if env.command == "VERSION" && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        Ok(0)
    } else {
        std::io::stdin().read_to_end(&mut stdin)
    };
    if let Err(e) = read {
        let e = CniError::new(
            code::IO,
            format!("reading the configuration from stdin: {e}"),
        );
        print(&e.to_json(LATEST));
        return ExitCode::FAILURE;
    }
    match run(&env, &stdin) {
        Ok(Some(v)) => {
            print(&v);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let version = version_of(&stdin).unwrap_or_else(|| LATEST.to_string());
            print(&e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

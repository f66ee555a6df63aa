//! Talking to the ipvlan-rs daemon: every use of its control protocol by this plugin is
//! here (the protocol's crate is named once, below), and starting a daemon when none
//! answers (`ipvlan_proto::client`, as the `ipvlan` CLI and the CNI plugin do).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ipvlan_core::{Flags, Mode};
use ipvlan_proto::{self as proto, PortArgs, Reply, Request, Status, client};
use ipvlan_sys::NetNs;

/// Creates slave `name` on `master`, both resolved in namespace `ns`, with the port's
/// mode and flags.
pub fn add_slave(
    ns: &NetNs,
    master: &str,
    name: &str,
    mode: Mode,
    flags: Flags,
    host_access: bool,
) -> Result<(), String> {
    let reply = call(
        ns,
        &Request::Add {
            master: master.to_string(),
            name: name.to_string(),
            mtu: None,
            args: PortArgs {
                mode: Some(mode),
                flags: Some(flags),
                source_guard: None,
                // Off leaves the port as it is (another network may share it).
                host_access: host_access.then_some(true),
            },
        },
        true,
    )?;
    check(reply).map(drop)
}

/// Deletes slave `name` of namespace `ns` through the daemon, so that it forgets it.
pub fn del_slave(ns: &NetNs, name: &str) -> Result<(), String> {
    let reply = call(
        ns,
        &Request::Del {
            dev: name.to_string(),
        },
        false,
    )?;
    check(reply).map(drop)
}

fn check(reply: Reply) -> Result<Reply, String> {
    match reply.status {
        Status::Ok => Ok(reply),
        Status::Usage | Status::Refused => Err(format!(
            "ipvlan-rs daemon: {}",
            reply.error.unwrap_or_default()
        )),
    }
}

fn call(ns: &NetNs, req: &Request, autostart: bool) -> Result<Reply, String> {
    let stream = connect(autostart)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| format!("ipvlan-rs control socket: {e}"))?;
    let fd: OwnedFd = ns
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("duplicating a namespace descriptor: {e}"))?;
    proto::call(&stream, &fd, req).map_err(|e| format!("the ipvlan-rs daemon did not answer: {e}"))
}

/// Connects to the daemon; with `autostart`, starts one if none answers (unless
/// `IPVLAN_NO_AUTOSTART` is set), with the `ipvlan` binary `IPVLAN_BIN` names, or the
/// one next to this plugin, or on `PATH`.
fn connect(autostart: bool) -> Result<UnixStream, String> {
    let how = if autostart {
        client::Autostart::Find
    } else {
        client::Autostart::Off
    };
    client::connect(how).map_err(|e| e.to_string())
}

//! The CLI side: parse, send to the daemon (starting one if none answers), print.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::grammar::{LinkCmd, parse_link};
use crate::output::{self, Style};
use ipvlan::proto::{self, Request, Status};

pub fn link(args: &[String], style: Style, json: bool, pretty: bool) -> ExitCode {
    let cmd = match parse_link(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let req = match cmd {
        LinkCmd::Add {
            master,
            name,
            mtu,
            args,
        } => Request::Add {
            master,
            name,
            mtu,
            mode: args.mode,
            flags: args.flags,
        },
        LinkCmd::Set { dev, args } => Request::Set {
            dev,
            mode: args.mode,
            flags: args.flags,
        },
        LinkCmd::Del { dev } => Request::Del { dev },
        LinkCmd::Show { dev } => Request::Show { dev },
    };
    let is_show = matches!(req, Request::Show { .. });
    let reply = match call(&req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "ipvlan: cannot reach the daemon on {}: {e}",
                proto::socket_path()
            );
            return ExitCode::from(2);
        }
    };
    if let Some(err) = &reply.error {
        eprintln!("{err}");
    }
    if reply.status == Status::Ok && is_show {
        if json {
            let v = output::json(&reply.links, style);
            let s = if pretty {
                serde_json::to_string_pretty(&v)
            } else {
                serde_json::to_string(&v)
            };
            println!("{}", s.unwrap_or_default());
        } else {
            print!("{}", output::text(&reply.links, style));
        }
    }
    ExitCode::from(reply.status as u8)
}

fn call(req: &Request) -> std::io::Result<proto::Reply> {
    let path = proto::socket_path();
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if std::env::var_os("IPVLAN_NO_AUTOSTART").is_some() => return Err(e),
        Err(_) => start_daemon(&path)?,
    };
    let netns: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")?.into();
    proto::call(&stream, &netns, req)
}

/// Starts a daemon in the background and waits until it answers.
fn start_daemon(path: &str) -> std::io::Result<UnixStream> {
    let dir = std::path::Path::new(path)
        .parent()
        .unwrap_or(std::path::Path::new("/run"));
    std::fs::create_dir_all(dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))?;
    Command::new(std::env::current_exe()?)
        .args(["daemon", "--socket", path])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

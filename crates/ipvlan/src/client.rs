//! The CLI side: parse, send to the daemon (starting one if none answers), print.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use crate::grammar::{LinkCmd, parse_link};
use crate::output::{self, Style};
use std::io::Write;

use ipvlan_proto::{self as proto, Notice, Request, Status};

pub fn link(args: &[String], style: Style, json: bool, pretty: bool) -> ExitCode {
    if matches!(args.first().map(String::as_str), Some("--help" | "-h")) {
        println!("{}\n\n{}", crate::grammar::USAGE, crate::grammar::EXAMPLES);
        return ExitCode::SUCCESS;
    }
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
            args,
        },
        LinkCmd::Set { dev, args } => Request::Set { dev, args },
        LinkCmd::Del { dev } => Request::Del { dev },
        LinkCmd::Show { dev } => Request::Show { dev },
    };
    let is_show = matches!(req, Request::Show { .. });
    let reply = match call(&req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ipvlan: {e}");
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

/// `ipvlan monitor`: prints every change the daemon reports until interrupted.
pub fn monitor(json: bool) -> ExitCode {
    let run = || -> std::io::Result<()> {
        let stream = connect()?;
        let reply = send(&stream, &Request::Monitor)?;
        if reply.status != Status::Ok {
            return Err(std::io::Error::other(reply.error.unwrap_or_default()));
        }
        let mut lines = std::io::BufReader::new(&stream);
        let mut out = std::io::stdout().lock();
        loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut lines, &mut line)? == 0 {
                return Err(std::io::Error::other("the daemon closed the stream"));
            }
            if json {
                write!(out, "{line}")?;
            } else {
                match serde_json::from_str::<Notice>(&line) {
                    Ok(n) => writeln!(out, "{n}")?,
                    Err(_) => write!(out, "{line}")?,
                }
            }
            out.flush()?;
        }
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipvlan monitor: {e}");
            ExitCode::from(2)
        }
    }
}

fn connect() -> std::io::Result<UnixStream> {
    let me = std::env::current_exe()?;
    Ok(proto::client::connect(proto::client::Autostart::With(&me))?)
}

fn send(stream: &UnixStream, req: &Request) -> std::io::Result<proto::Reply> {
    let netns: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")?.into();
    proto::call(stream, &netns, req)
}

fn call(req: &Request) -> Result<proto::Reply, String> {
    let stream = connect().map_err(|e| e.to_string())?;
    send(&stream, req).map_err(|e| {
        format!(
            "the ipvlan-rs daemon on {} did not answer: {e}",
            proto::socket_path()
        )
    })
}

//! Talking to the ipvlan-rs daemon: the control protocol of `ipvlan-proto`, and starting
//! a daemon when none answers (`ipvlan_proto::client`, as the `ipvlan` CLI does).

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ipvlan_proto::{self as proto, Reply, Request, Status, client};

use crate::cni::{CniError, code};

/// Connects to the daemon; with `autostart`, starts one if none answers (unless
/// `IPVLAN_NO_AUTOSTART` is set, as for the CLI), with the `ipvlan` binary
/// `IPVLAN_BIN` names, or the one next to this plugin, or on `PATH`.
pub fn connect(autostart: bool) -> Result<UnixStream, CniError> {
    let how = if autostart {
        client::Autostart::Find
    } else {
        client::Autostart::Off
    };
    client::connect(how).map_err(|e| {
        CniError::new(
            code::TRY_AGAIN,
            format!("cannot reach the ipvlan-rs daemon on {}", e.path),
        )
        .details(e.why)
    })
}

/// One request, on its own connection, resolved in the namespace `netns`.
pub fn call(stream: &UnixStream, netns: &OwnedFd, req: &Request) -> Result<Reply, CniError> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| CniError::system(format!("control socket: {e}")))?;
    proto::call(stream, netns, req).map_err(|e| {
        CniError::new(code::TRY_AGAIN, "the ipvlan-rs daemon did not answer").details(e.to_string())
    })
}

/// A reply as a result: `Usage` (e.g. `Cannot find device "eth9"`) is a configuration
/// error, `Refused` the daemon's own.
pub fn check(reply: Reply) -> Result<Reply, CniError> {
    let msg = reply.error.clone().unwrap_or_default();
    match reply.status {
        Status::Ok => Ok(reply),
        Status::Usage => Err(CniError::config(format!("ipvlan-rs daemon: {msg}"))),
        Status::Refused => Err(CniError::new(
            code::DAEMON,
            format!("ipvlan-rs daemon refused: {msg}"),
        )),
    }
}

//! What can go wrong with a request, with its source and the exit status it maps to.
//!
//! The control logic returns these; the reply is made from them at one place
//! ([`super::control`]), where `Display` gives the words the CLI prints — iproute2's
//! where iproute2 has them ("Cannot find device", "RTNETLINK answers: ...").

use std::io;

use ipvlan_core::PortError;
use ipvlan_proto::Status;
use ipvlan_sys::nft::NftError;
use ipvlan_sys::rtnl::RtnlError;

use crate::grammar::UsageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    BadName(#[from] UsageError),
    #[error("Cannot find device \"{0}\"")]
    NoSuchDevice(String),
    #[error("Error: a device named \"{0}\" already exists (RTNETLINK answers: File exists).")]
    NameInUse(String),
    #[error("Error: \"{0}\" is not an ipvlan device of ipvlan-rs (use ip for other devices).")]
    NotOurs(String),
    #[error("Error: \"{0}\" is the host end of an ipvlan-rs slave and cannot be a master.")]
    HostEndAsMaster(String),
    #[error(
        "Error: master \"{0}\" is a loopback device; an ipvlan master must be an Ethernet device (RTNETLINK answers: Invalid argument)."
    )]
    LoopbackMaster(String),
    #[error(
        "Error: master \"{master}\" is not an Ethernet device (link type {arphrd}); an ipvlan master must be an Ethernet device (RTNETLINK answers: Invalid argument)."
    )]
    NotEthernet { master: String, arphrd: u16 },
    #[error(
        "Error: master \"{0}\" is already in use as a port of another device (RTNETLINK answers: Device or resource busy)."
    )]
    MasterBusy(String),
    #[error("Error: {0} (RTNETLINK answers: No space left on device)")]
    PortFull(#[source] PortError),
    #[error("Error: Operation not permitted (ipvlan-rs needs root or CAP_NET_ADMIN).")]
    NotPermitted,
    #[error("Error: no free L3S queue number")]
    NoL3sQueue,
    #[error("Error: the master's namespace has no lo")]
    NoLoopback,
    #[error("Error: mode l3s needs xtables' NFQUEUE target in the master's namespace: {0}")]
    NoNfqueue(#[source] NftError),
    /// A device the daemon just made or looked up was gone the moment after.
    #[error("Error: {0} vanished")]
    Vanished(String),
    #[error("Error: cannot find the master's new namespace")]
    NamespaceGone,
    /// Host access cannot come on while a slave has an address of the master's
    /// namespace.
    #[error(
        "Error: host_access on: {0} is an address of a slave and of the master's namespace (RTNETLINK answers: Address already in use)."
    )]
    HostAddrClash(std::net::IpAddr),
    /// The kernel refused a request (its errno is in the source).
    #[error(transparent)]
    Kernel(#[from] RtnlError),
    #[error("Error: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// The exit status the CLI ends with: 1 for what the user wrote, 2 for what the
    /// system refused.
    pub fn status(&self) -> Status {
        match self {
            Self::BadName(_) | Self::NoSuchDevice(_) => Status::Usage,
            _ => Status::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worded_as_the_cli_prints_them() {
        let cases: [(Error, Status, &str); 7] = [
            (
                Error::NoSuchDevice("eth9".into()),
                Status::Usage,
                "Cannot find device \"eth9\"",
            ),
            (
                Error::BadName(UsageError("bad name".into())),
                Status::Usage,
                "bad name",
            ),
            (
                Error::NameInUse("ipvl0".into()),
                Status::Refused,
                "Error: a device named \"ipvl0\" already exists (RTNETLINK answers: File exists).",
            ),
            (
                Error::NotEthernet {
                    master: "tun0".into(),
                    arphrd: 65534,
                },
                Status::Refused,
                "Error: master \"tun0\" is not an Ethernet device (link type 65534); an ipvlan master must be an Ethernet device (RTNETLINK answers: Invalid argument).",
            ),
            (
                Error::Kernel(RtnlError::Kernel {
                    errno: nix::errno::Errno::EEXIST as i32,
                }),
                Status::Refused,
                "RTNETLINK answers: File exists",
            ),
            (
                Error::Io(io::Error::from_raw_os_error(
                    nix::errno::Errno::ENOENT as i32,
                )),
                Status::Refused,
                "Error: No such file or directory (os error 2)",
            ),
            (
                Error::Vanished("the new host end".into()),
                Status::Refused,
                "Error: the new host end vanished",
            ),
        ];
        for (e, status, text) in cases {
            assert_eq!(e.status(), status, "{e:?}");
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn the_kernels_errno_is_kept() {
        let e = Error::from(RtnlError::Kernel {
            errno: nix::errno::Errno::EBUSY as i32,
        });
        assert!(
            matches!(&e, Error::Kernel(k) if k.errno() == Some(nix::errno::Errno::EBUSY as i32))
        );
        let full = Error::PortFull(PortError::DevIdExhausted);
        assert_eq!(
            full.to_string(),
            "Error: no free dev_id on this port (RTNETLINK answers: No space left on device)"
        );
        assert!(std::error::Error::source(&full).is_some());
    }
}

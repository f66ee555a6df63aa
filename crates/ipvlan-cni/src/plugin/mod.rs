//! The CNI verbs: ADD, DEL, CHECK, STATUS, GC.
//!
//! Each verb has its file: `add` (ADD), `del` (DEL), `check` (CHECK, STATUS, GC); this
//! one holds the `CNI_*` environment and what they share: error mapping, opening the
//! target namespace, finding the master, temporary names and removing a link.

mod add;
mod check;
mod del;

pub use add::add;
pub use check::{check, gc, status};
pub use del::del;

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use ipvlan_proto::{Request, Status};
use ipvlan_sys::NetNs;
use ipvlan_sys::rtnl::{RT_TABLE_MAIN, Rtnl, RtnlError};

use crate::cni::{CniError, CniResult, NetConf, code};
use crate::daemon;

/// The `CNI_*` environment. `CNI_ARGS` is not used here; IPAM plugins inherit it with
/// the rest of the environment.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub path: String,
}

impl Env {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Self {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            path: var("CNI_PATH"),
        }
    }

    /// Checks that the variables `command` needs are there (spec: the message names the
    /// invalid variables).
    pub fn validate(&self, need_path: bool) -> Result<(), CniError> {
        let mut missing = Vec::new();
        let attach = matches!(self.command.as_str(), "ADD" | "DEL" | "CHECK");
        if attach && self.container_id.is_empty() {
            missing.push("CNI_CONTAINERID");
        }
        if matches!(self.command.as_str(), "ADD" | "CHECK") && self.netns.is_empty() {
            missing.push("CNI_NETNS");
        }
        if attach && self.ifname.is_empty() {
            missing.push("CNI_IFNAME");
        }
        if need_path && self.path.is_empty() {
            missing.push("CNI_PATH");
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "required environment variables missing: {}",
                    missing.join(", ")
                ),
            ));
        }
        if attach
            && (self.ifname.len() > 15
                || self.ifname == "."
                || self.ifname == ".."
                || self
                    .ifname
                    .chars()
                    .any(|c| c == '/' || c == ':' || c.is_whitespace()))
        {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_IFNAME {:?} is not a valid interface name (1 to 15 bytes, no '/', ':' or spaces)",
                    self.ifname
                ),
            ));
        }
        Ok(())
    }
}

fn sys(what: impl std::fmt::Display) -> impl FnOnce(RtnlError) -> CniError {
    move |e| CniError::system(format!("{what}: {e}"))
}

fn io_sys(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> CniError {
    move |e| CniError::system(format!("{what}: {e}"))
}

fn ns_fd(ns: &NetNs) -> Result<OwnedFd, CniError> {
    ns.as_fd()
        .try_clone_to_owned()
        .map_err(io_sys("duplicating a namespace descriptor"))
}

fn open_target(path: &str) -> Result<NetNs, CniError> {
    let ns = NetNs::open(path).map_err(|e| {
        CniError::new(
            code::INVALID_ENV,
            format!("CNI_NETNS {path:?}: cannot open the network namespace: {e}"),
        )
    })?;
    // A namespace file that is no namespace (a stale mount point) fails here.
    ns.run(|| ()).map_err(|e| {
        CniError::new(
            code::INVALID_ENV,
            format!("CNI_NETNS {path:?} is not a network namespace: {e}"),
        )
    })?;
    Ok(ns)
}

/// The interface of the default route in `ns`, IPv4's before IPv6's (what the reference
/// plugin uses when `master` is not given, or is `""` as Podman writes it).
fn default_route_master(ns: &NetNs) -> Result<String, CniError> {
    let routes = Rtnl::in_ns(ns)
        .map_err(io_sys("netlink socket"))?
        .routes()
        .map_err(sys("listing routes"))?;
    let default = |v4: bool| {
        routes
            .iter()
            .filter(|r| r.prefix == 0 && r.dst.is_ipv4() == v4 && r.table == RT_TABLE_MAIN)
            .find_map(|r| r.oif)
    };
    let oif = default(true).or_else(|| default(false)).ok_or_else(|| {
        CniError::config(
            "no \"master\" given and no default route to take the master interface from",
        )
    })?;
    let link = Rtnl::in_ns(ns)
        .map_err(io_sys("netlink socket"))?
        .link_by_index(oif)
        .map_err(sys("looking up the default route's interface"))?
        .ok_or_else(|| CniError::config("the default route's interface vanished"))?;
    Ok(link.name)
}

/// The previous plugin's result of a chained invocation, if there is one.
fn prev_result(conf: &NetConf) -> Result<Option<CniResult>, CniError> {
    conf.prev_result
        .as_ref()
        .map(|p| {
            CniResult::parse(p).map_err(|e| {
                CniError::new(e.code, format!("could not parse prevResult: {}", e.msg))
                    .details(e.details)
            })
        })
        .transpose()
}

/// The master's name: `master`; else, chained, the one interface of `prevResult` (as
/// the reference plugin: it is an error when there is not exactly one, named); else
/// the interface of the default route in `ns`.
fn master_name(conf: &NetConf, prev: Option<&CniResult>, ns: &NetNs) -> Result<String, CniError> {
    if let Some(m) = &conf.master {
        return Ok(m.clone());
    }
    match prev {
        Some(p) => match p.interfaces.as_slice() {
            [only] if !only.name.is_empty() => Ok(only.name.clone()),
            _ => Err(CniError::config(
                "chained master failure. PrevResult lacks a single named interface",
            )),
        },
        None => default_route_master(ns),
    }
}

/// The master interface, checked.
fn master_link(
    conf: &NetConf,
    prev: Option<&CniResult>,
    ns: &NetNs,
) -> Result<ipvlan_sys::rtnl::Link, CniError> {
    let name = master_name(conf, prev, ns)?;
    let where_ = if conf.link_in_container {
        " in the container namespace (linkInContainer)"
    } else {
        ""
    };
    Rtnl::in_ns(ns)
        .map_err(io_sys("netlink socket"))?
        .link_by_name(&name)
        .map_err(sys(format!("looking up master {name:?}")))?
        .ok_or_else(|| CniError::config(format!("master interface {name:?} not found{where_}")))
}

/// A name for the slave until it is in the container and renamed: `ipvc` + 8 hex digits.
fn temp_name(env: &Env) -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(env.container_id.as_bytes());
    h.write(env.ifname.as_bytes());
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("ipvc{:08x}", h.finish() & 0xffff_ffff)
}

/// Removes link `name` of namespace `ns` if it is there: through the daemon (so it
/// forgets the slave), or with netlink when the daemon does not know it or is not
/// running. Deleting one end of a veth removes the other.
fn remove_link(ns: &NetNs, name: &str) -> Result<(), CniError> {
    let mut rt = Rtnl::in_ns(ns).map_err(io_sys("netlink socket"))?;
    let Some(link) = rt
        .link_by_name(name)
        .map_err(sys(format!("looking up {name:?}")))?
    else {
        return Ok(());
    };
    if let Ok(stream) = daemon::connect(false) {
        match daemon::call(
            &stream,
            &ns_fd(ns)?,
            &Request::Del {
                dev: name.to_string(),
            },
        ) {
            Ok(r) if r.status == Status::Ok => return Ok(()),
            Ok(r) => eprintln!(
                "ipvlan-cni: daemon did not delete {name}: {}; deleting it with netlink",
                r.error.unwrap_or_default()
            ),
            Err(e) => eprintln!("ipvlan-cni: {e}; deleting {name} with netlink"),
        }
    }
    match rt.del_link(link.index) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(CniError::system(format!("deleting {name}: {e}"))),
    }
}

/// Masks `ip` to its first `prefix` bits.
fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(
            network("10.1.2.3".parse().unwrap(), 24),
            "10.1.2.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network("10.1.2.3".parse().unwrap(), 0),
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network("fd00:1::5".parse().unwrap(), 64),
            "fd00:1::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn env_validation() {
        let mut e = Env {
            command: "ADD".into(),
            ..Default::default()
        };
        let err = e.validate(true).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        for v in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            assert!(err.msg.contains(v), "{err:?}");
        }
        e.container_id = "c1".into();
        e.netns = "/run/netns/x".into();
        e.ifname = "eth0".into();
        e.path = "/usr/lib/cni".into();
        e.validate(true).unwrap();
        e.ifname = "a-very-long-interface-name".into();
        assert_eq!(e.validate(true).unwrap_err().code, code::INVALID_ENV);
        // DEL without a namespace is fine.
        let d = Env {
            command: "DEL".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            path: "/x".into(),
            ..Default::default()
        };
        d.validate(true).unwrap();
    }

    #[test]
    fn temp_names_are_valid_and_differ() {
        let e = Env {
            container_id: "abc".into(),
            ifname: "eth0".into(),
            ..Default::default()
        };
        let a = temp_name(&e);
        let b = temp_name(&e);
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("ipvc"));
        assert_ne!(a, b);
    }
}

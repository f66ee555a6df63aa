//! CHECK (the interface, its MAC, addresses and routes against `prevResult`), and the
//! spec 1.1 verbs STATUS and GC.

use ipvlan_core::MacAddr;
use ipvlan_proto::{Request, Status};
use ipvlan_sys::NetNs;
use ipvlan_sys::rtnl::{self, Rtnl};
use serde_json::Value;

use super::{Env, io_sys, master_link, network, ns_fd, open_target, sys};
use crate::cni::{CniError, CniResult, NetConf, code, parse_cidr, parse_version};
use crate::daemon;
use crate::ipam::Ipam;

fn mismatch(msg: impl Into<String>) -> CniError {
    CniError::new(code::CHECK_MISMATCH, msg)
}

pub fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    if parse_version(&conf.cni_version).is_some_and(|v| v < (0, 4, 0)) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CHECK needs cniVersion 0.4.0 or later, not {}",
                conf.cni_version
            ),
        ));
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::config("CHECK needs prevResult in the network configuration"))?;
    let prev = CniResult::parse(prev)?;
    if let Some(i) = Ipam::for_conf(conf)? {
        i.check(conf)?;
    }
    let target = open_target(&env.netns)?;
    let host = NetNs::current().map_err(io_sys("opening our own namespace"))?;

    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && i.sandbox.as_deref().is_none_or(|s| s == env.netns))
        .ok_or_else(|| {
            mismatch(format!(
                "prevResult has no interface {:?} in sandbox {:?}",
                env.ifname, env.netns
            ))
        })?;
    let mut rt = Rtnl::in_ns(&target).map_err(io_sys("netlink socket in CNI_NETNS"))?;
    let link = rt
        .link_by_name(&env.ifname)
        .map_err(sys("looking up CNI_IFNAME"))?
        .ok_or_else(|| {
            mismatch(format!(
                "interface {:?} not found in {}",
                env.ifname, env.netns
            ))
        })?;
    let master = master_link(
        conf,
        None,
        if conf.link_in_container {
            &target
        } else {
            &host
        },
    )?;
    if link.mac.is_none() || link.mac != master.mac {
        return Err(mismatch(format!(
            "interface {:?} does not carry the MAC address of its master {:?}",
            env.ifname, master.name
        )));
    }
    let mac = link.mac.map(|m| MacAddr(m).to_string());
    if let Some(want) = &prev.interfaces[idx].mac
        && Some(want.to_ascii_lowercase()) != mac
    {
        return Err(mismatch(format!(
            "interface {:?} has MAC {} but prevResult says {want}",
            env.ifname,
            mac.unwrap_or_default()
        )));
    }
    let have = rt.addrs().map_err(sys("listing addresses"))?;
    for ip in prev.ips.iter().filter(|i| i.interface == Some(idx)) {
        let (addr, prefix) = ip.addr()?;
        if !have
            .iter()
            .any(|a| a.index == link.index && a.ip == addr && a.prefix == prefix)
        {
            return Err(mismatch(format!(
                "address {} is not on {:?}",
                ip.address, env.ifname
            )));
        }
    }
    let routes = rt.routes().map_err(sys("listing routes"))?;
    for r in &prev.routes {
        let (dst, prefix) = parse_cidr(&r.dst)?;
        let dst = network(dst, prefix);
        let found = routes.iter().any(|e: &rtnl::Route| {
            e.dst == dst
                && e.prefix == prefix
                && r.gw.is_none_or(|g| e.gw == Some(g))
                && r.table().is_none_or(|t| t == e.table)
        });
        if !found {
            return Err(mismatch(format!(
                "route {} {} is missing in {}",
                r.dst,
                r.gw.map(|g| format!("via {g}")).unwrap_or_default(),
                env.netns
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// STATUS and GC (spec 1.1)
// ---------------------------------------------------------------------------------------

pub fn status(conf: &NetConf) -> Result<(), CniError> {
    let unavailable = |e: CniError| {
        CniError::new(code::NOT_AVAILABLE, e.msg.clone()).details(if e.details.is_empty() {
            format!("code {}", e.code)
        } else {
            e.details
        })
    };
    let stream = daemon::connect(true).map_err(unavailable)?;
    let me = NetNs::current().map_err(io_sys("opening our own namespace"))?;
    let reply =
        daemon::call(&stream, &ns_fd(&me)?, &Request::Show { dev: None }).map_err(unavailable)?;
    if reply.status != Status::Ok {
        return Err(CniError::new(
            code::NOT_AVAILABLE,
            format!(
                "the ipvlan-rs daemon refuses requests: {}",
                reply.error.unwrap_or_default()
            ),
        ));
    }
    if let Some(i) = Ipam::for_conf(conf).map_err(unavailable)?
        && i.supports("1.1.0")
    {
        i.status(conf)?;
    }
    Ok(())
}

pub fn gc(conf: &NetConf) -> Result<(), CniError> {
    if let Some(v) = conf.raw.get("cni.dev/valid-attachments") {
        let ok = v.as_array().is_some_and(|a| {
            a.iter().all(|x| {
                x.get("containerID").is_some_and(Value::is_string)
                    && x.get("ifname").is_some_and(Value::is_string)
            })
        });
        if !ok {
            return Err(CniError::config(
                "cni.dev/valid-attachments must be a list of {\"containerID\", \"ifname\"} objects",
            ));
        }
    }
    // The daemon keeps no record of which container a slave belongs to, and a slave
    // goes away with its namespace: nothing of ours can leak. IPAM may hold stale
    // allocations: it is asked if it speaks GC.
    if let Some(i) = Ipam::for_conf(conf)?
        && i.supports("1.1.0")
    {
        i.gc(conf)?;
    }
    Ok(())
}

//! ADD: the slave made through the daemon under a temporary name, moved into the
//! container, renamed, addressed, and held until its addresses have settled and the
//! daemon switches them; undone on any failure.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use ipvlan_core::MacAddr;
use ipvlan_proto::{PortArgs, Request};
use ipvlan_sys::NetNs;
use ipvlan_sys::rtnl::{
    self, Addr, IFA_F_DADFAILED, IFA_F_TENTATIVE, IFF_UP, LinkChange, RT_TABLE_MAIN, Rtnl,
};

use super::{
    Env, io_sys, master_link, network, ns_fd, open_target, prev_result, remove_link, sys, temp_name,
};
use crate::cni::{CniError, CniResult, Interface, NetConf, code, parse_cidr};
use crate::daemon;
use crate::ipam::Ipam;

pub fn add(env: &Env, conf: &NetConf) -> Result<CniResult, CniError> {
    let target = open_target(&env.netns)?;
    let host = NetNs::current().map_err(io_sys("opening our own namespace"))?;
    let master_ns = if conf.link_in_container {
        &target
    } else {
        &host
    };
    let prev = prev_result(conf)?;
    let master = master_link(conf, prev.as_ref(), master_ns)?;
    if let Some(mtu) = conf.mtu
        && mtu > master.mtu
    {
        return Err(CniError::config(format!(
            "invalid MTU {mtu}, must be [0, master MTU({})]",
            master.mtu
        )));
    }
    let mut target_rt = Rtnl::in_ns(&target).map_err(io_sys("netlink socket in CNI_NETNS"))?;
    if target_rt
        .link_by_name(&env.ifname)
        .map_err(sys("looking up CNI_IFNAME"))?
        .is_some()
    {
        return Err(CniError::system(format!(
            "an interface named {:?} already exists in {}",
            env.ifname, env.netns
        )));
    }
    // An unknown IPAM plugin is refused before anything is made.
    let ipam = Ipam::for_conf(conf)?;
    // Chained without IPAM: the addresses (and routes) of the previous plugin.
    let chained = prev.filter(|p| ipam.is_none() && !p.ips.is_empty());

    let tmp = temp_name(env);
    let stream = daemon::connect(true)?;
    daemon::check(daemon::call(
        &stream,
        &ns_fd(master_ns)?,
        &Request::Add {
            master: master.name.clone(),
            name: tmp.clone(),
            mtu: conf.mtu,
            args: PortArgs {
                mode: Some(conf.mode),
                flags: conf.flags,
                source_guard: conf.source_guard,
                host_access: conf.host_access,
            },
        },
    )?)?;
    drop(stream);

    let mut ipam_done = false;
    let made = setup(
        env,
        conf,
        &host,
        &target,
        &mut target_rt,
        &tmp,
        &master.name,
        ipam.as_ref(),
        chained,
        &mut ipam_done,
    );
    match made {
        Ok(r) => Ok(r),
        Err(e) => {
            // Undo: the link (under whichever name it has now, wherever it is), then
            // the addresses IPAM handed out.
            for (ns, name) in [(&target, &env.ifname), (&target, &tmp), (&host, &tmp)] {
                if let Err(u) = remove_link(ns, name) {
                    eprintln!("ipvlan-cni: cleaning up after a failed ADD: {u}");
                }
            }
            if ipam_done
                && let Some(i) = &ipam
                && let Err(u) = i.del(conf)
            {
                eprintln!("ipvlan-cni: releasing the IPAM allocation: {u}");
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn setup(
    env: &Env,
    conf: &NetConf,
    host: &NetNs,
    target: &NetNs,
    target_rt: &mut Rtnl,
    tmp: &str,
    master: &str,
    ipam: Option<&Ipam>,
    chained: Option<CniResult>,
    ipam_done: &mut bool,
) -> Result<CniResult, CniError> {
    // Into the container (unless it was made there: linkInContainer).
    if !conf.link_in_container {
        let mut host_rt = Rtnl::in_ns(host).map_err(io_sys("netlink socket"))?;
        let link = host_rt
            .link_by_name(tmp)
            .map_err(sys(format!("looking up {tmp}")))?
            .ok_or_else(|| CniError::system(format!("the new slave {tmp} vanished")))?;
        host_rt
            .set_link(
                link.index,
                &LinkChange {
                    netns_fd: Some(target.as_fd().as_raw_fd()),
                    ..Default::default()
                },
            )
            .map_err(sys(format!("moving {tmp} into {}", env.netns)))?;
    }
    let link = target_rt
        .link_by_name(tmp)
        .map_err(sys(format!("looking up {tmp} in {}", env.netns)))?
        .ok_or_else(|| CniError::system(format!("the new slave {tmp} is not in {}", env.netns)))?;
    let index = link.index;
    target_rt
        .set_link(
            index,
            &LinkChange {
                name: Some(env.ifname.clone()),
                ..Default::default()
            },
        )
        .map_err(sys(format!("renaming {tmp} to {}", env.ifname)))?;

    // Announce the interface when it comes up and when its addresses change.
    let ifname = env.ifname.clone();
    target
        .run(move || {
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"), b"1")
                .map_err(|e| format!("net.ipv4.conf.{ifname}.arp_notify: {e}"))?;
            // IPv6 may be disabled in the container: not an error.
            if let Err(e) = std::fs::write(
                format!("/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify"),
                b"1",
            ) {
                eprintln!("ipvlan-cni: net.ipv6.conf.{ifname}.ndisc_notify: {e}");
            }
            Ok::<(), String>(())
        })
        .map_err(io_sys("entering CNI_NETNS"))?
        .map_err(CniError::system)?;

    let mut result = match ipam {
        Some(i) => {
            let r = i.add(conf)?;
            *ipam_done = true;
            if r.ips.is_empty() {
                return Err(CniError::new(
                    code::IPAM,
                    "IPAM plugin returned missing IP config",
                ));
            }
            r
        }
        None => chained.unwrap_or_default(),
    };

    configure(target_rt, index, &env.ifname, &result)?;
    wait_switched(target, &env.ifname, master, &result)?;

    let mac = target_rt
        .link_by_index(index)
        .map_err(sys("reading the interface back"))?
        .and_then(|l| l.mac)
        .map(|m| MacAddr(m).to_string());
    result.interfaces = vec![Interface {
        name: env.ifname.clone(),
        mac,
        mtu: None,
        sandbox: Some(env.netns.clone()),
    }];
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    if let Some(d) = &conf.dns {
        result.dns = d.clone();
    }
    Ok(result)
}

/// Link up, addresses, routes (a route without `gw` goes through the gateway of its
/// family, as the reference plugins' `ConfigureIface` does). The routes are added once
/// the addresses have settled (see [`settle`]).
fn configure(
    target_rt: &mut Rtnl,
    index: u32,
    ifname: &str,
    result: &CniResult,
) -> Result<(), CniError> {
    target_rt
        .set_link(
            index,
            &LinkChange {
                flags_set: IFF_UP,
                ..Default::default()
            },
        )
        .map_err(sys("setting the interface up"))?;
    let (mut gw4, mut gw6) = (None, None);
    for ip in &result.ips {
        let (addr, prefix) = ip.addr()?;
        target_rt
            .add_addr_with_broadcast(&Addr {
                index,
                ip: addr,
                prefix,
            })
            .map_err(sys(format!("adding address {}", ip.address)))?;
        match ip.gateway {
            Some(g @ IpAddr::V4(_)) if gw4.is_none() => gw4 = Some(g),
            Some(g @ IpAddr::V6(_)) if gw6.is_none() => gw6 = Some(g),
            _ => {}
        }
    }
    settle(target_rt, index, ifname)?;
    for r in &result.routes {
        let (dst, prefix) = parse_cidr(&r.dst)?;
        let gw = r.gw.or(if dst.is_ipv4() { gw4 } else { gw6 });
        target_rt
            .add_route(&rtnl::Route {
                dst: network(dst, prefix),
                prefix,
                gw,
                oif: Some(index),
                table: r.table().unwrap_or(RT_TABLE_MAIN),
                priority: r.priority(),
            })
            .map_err(sys(format!(
                "adding route {} via {}",
                r.dst,
                gw.map(|g| g.to_string()).unwrap_or_else(|| "-".into())
            )))?;
    }
    Ok(())
}

/// How long ADD waits for IPv6 duplicate address detection (the reference plugins'
/// `SettleAddresses` timeout).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long ADD waits for the daemon to switch the container's addresses.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// Waits until no address of interface `index` is tentative (IPv6 duplicate address
/// detection is over), so that the container can use its addresses as soon as ADD
/// returns. A duplicate found is an error naming the address.
fn settle(rt: &mut Rtnl, index: u32, ifname: &str) -> Result<(), CniError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let addrs = rt
            .addrs_with_flags()
            .map_err(sys("listing the interface's addresses"))?;
        let mine = addrs.iter().filter(|(a, _)| a.index == index);
        if let Some((a, _)) = mine.clone().find(|(_, f)| f & IFA_F_DADFAILED != 0) {
            return Err(CniError::new(
                code::ADDRESS_IN_USE,
                format!(
                    "duplicate address detection failed for {}/{} on {ifname}: another host on the network uses it",
                    a.ip, a.prefix
                ),
            ));
        }
        let tentative: Vec<String> = mine
            .filter(|(_, f)| f & IFA_F_TENTATIVE != 0)
            .map(|(a, _)| a.ip.to_string())
            .collect();
        if tentative.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CniError::system(format!(
                "{ifname} still has tentative addresses after {} seconds: {}",
                SETTLE_TIMEOUT.as_secs(),
                tentative.join(", ")
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until the daemon has learned every address of `result` on the container's
/// interface (its `Show` lists what the port switches), so that the first packet to
/// the container is not lost. An address that left the interface meanwhile was
/// refused by the daemon: another slave of the master has it.
fn wait_switched(
    target: &NetNs,
    ifname: &str,
    master: &str,
    result: &CniResult,
) -> Result<(), CniError> {
    let want: Vec<IpAddr> = result
        .ips
        .iter()
        .map(|ip| ip.addr().map(|(a, _)| a))
        .collect::<Result<_, _>>()?;
    if want.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + SWITCH_TIMEOUT;
    let mut rt = Rtnl::in_ns(target).map_err(io_sys("netlink socket in CNI_NETNS"))?;
    loop {
        let stream = daemon::connect(false)?;
        let reply = daemon::check(daemon::call(
            &stream,
            &ns_fd(target)?,
            &Request::Show {
                dev: Some(ifname.to_string()),
            },
        )?)?;
        let learned: Vec<IpAddr> = reply
            .links
            .iter()
            .flat_map(|l| l.addrs.iter().copied())
            .collect();
        let missing: Vec<IpAddr> = want
            .iter()
            .copied()
            .filter(|a| !learned.contains(a))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let on_link = rt
            .addrs()
            .map_err(sys("listing the interface's addresses"))?;
        if let Some(gone) = missing
            .iter()
            .find(|a| !on_link.iter().any(|l| l.ip == **a))
        {
            return Err(CniError::new(
                code::ADDRESS_IN_USE,
                format!(
                    "address {gone} was refused on {ifname}: another slave of master {master:?} has it"
                ),
            ));
        }
        if Instant::now() > deadline {
            let missing: Vec<String> = missing.iter().map(IpAddr::to_string).collect();
            return Err(CniError::new(
                code::DAEMON,
                format!(
                    "the ipvlan-rs daemon has not learned {} of {ifname} after {} seconds: packets to it would not be switched",
                    missing.join(", "),
                    SWITCH_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(POLL);
    }
}

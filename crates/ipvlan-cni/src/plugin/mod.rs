//! The CNI verbs: ADD, DEL, CHECK, STATUS, GC.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ipvlan_core::MacAddr;
use ipvlan_proto::{PortArgs, Request, Status};
use ipvlan_sys::NetNs;
use ipvlan_sys::rtnl::{
    self, Addr, IFA_F_DADFAILED, IFA_F_TENTATIVE, IFF_UP, LinkChange, RT_TABLE_MAIN, Rtnl,
    RtnlError,
};
use serde_json::Value;

use crate::cni::{CniError, CniResult, Interface, NetConf, code, parse_cidr, parse_version};
use crate::daemon;
use crate::ipam::Ipam;

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

// ---------------------------------------------------------------------------------------
// ADD
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// DEL
// ---------------------------------------------------------------------------------------

pub fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    if let Some(i) = Ipam::for_conf(conf)? {
        i.del(conf)?;
    }
    if env.netns.is_empty() {
        return Ok(());
    }
    let target = match NetNs::open(&env.netns) {
        Ok(ns) => ns,
        // Already gone: so is the interface (deleting a namespace deletes its veths).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(CniError::system(format!(
                "CNI_NETNS {:?}: cannot open: {e}",
                env.netns
            )));
        }
    };
    if target.run(|| ()).is_err() {
        // A stale mount point or plain file: no namespace, nothing left to delete.
        return Ok(());
    }
    remove_link(&target, &env.ifname)
}

// ---------------------------------------------------------------------------------------
// CHECK
// ---------------------------------------------------------------------------------------

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

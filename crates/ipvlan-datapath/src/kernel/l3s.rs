//! L3S routed through the master's namespace (kernel backend with the fast path): what
//! the master namespace's stack needs so that the slaves' traffic crosses its netfilter
//! both ways at kernel speed, conntrack and NAT included.
//!
//! * Egress: the host end's program hands a slave's packet to the stack on the host end
//!   (`ipvlan_core::fastpath`), which forwards it out of the master: PREROUTING (in:
//!   the host end), FORWARD, POSTROUTING (out: the master). The host end forwards
//!   (`net.ipv4.conf.<host end>.forwarding=1`, `net.ipv6.conf.<host end>.force_forwarding=1`).
//! * Ingress: the port's own routing table ([`table`]) holds `SLAVE dev HOST_END` for
//!   every slave address, looked up for what arrives on the master (`ip rule iif
//!   MASTER lookup T`, at [`RULE_PREF`]): PREROUTING (DNAT), FORWARD, POSTROUTING
//!   (out: the host end), to the slave. The host end is NOARP: a permanent neighbour
//!   entry per slave address gives the master's MAC, which the slave carries. The slave
//!   sees the TTL one less than the driver would give it.
//! * The strict reverse-path check of egress looks the slave's source up with the
//!   forward route's output device (the master) as input device: the same rule and
//!   table find the host end.
//! * The master forwards what arrives on it only if it did before, plus the slaves'
//!   traffic: where `net.ipv4.conf.<master>.forwarding` was 0 it is set to 1, and a rule
//!   just after the table's ([`RULE_PREF`] + 1) blackholes everything else arriving on
//!   the master that is not local; IPv6 the same with `force_forwarding` (only where
//!   `net.ipv6.conf.all.forwarding` is 0). The blackhole rule is also the record that
//!   the sysctl was ours to restore, which a daemon started later reads back.
//! * Forwarding settings changed later (the kernel announces them, `ip monitor
//!   netconf`) are followed (`Routing::follow_forwarding`): when the host turns
//!   forwarding on for everything (`net.ipv4.ip_forward=1`, as Docker does) the blackhole
//!   rule goes and the master's setting is the host's; when forwarding is turned off
//!   for everything (which the kernel writes into every device) the host ends and the
//!   master get theirs back, the master with the blackhole rule again.
//!
//! The rules name the master; when it is renamed they are made again under the new
//! name (`Routing::master_renamed`). Everything is removed when the port leaves L3S
//! or goes away; host ends get their sysctls back (or go with their slaves).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

use ipvlan_core::{MacAddr, PortSnapshot};
use ipvlan_sys::NetNs;
use ipvlan_sys::rtnl::{NETCONF_ALL, Netconf, Route, Rtnl, RtnlError};

/// The port's routing table: this plus the master's ifindex.
pub const TABLE_BASE: u32 = 0x1a5c_0000;
/// Priority of the rule that looks the port's table up (before `main`, 32766); the
/// blackhole rule comes one after it.
pub const RULE_PREF: u32 = 995;
/// `EEXIST`: the route or rule is there already.
const EEXIST: i32 = 17;

/// `ENOENT`: the rule is gone already.
const ENOENT: i32 = 2;
/// `ENETDOWN`: a route through a device that is down.
const ENETDOWN: i32 = 100;

/// What to do about the master's forwarding of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MasterStep {
    /// Nothing: it forwards by the host's own setting, or by ours as it should.
    Leave,
    /// Turn it on (where it is off) and blackhole everything else arriving on it: the
    /// setting is ours.
    Take,
    /// The host forwards on purpose now: the blackhole rule goes, the setting is the
    /// host's.
    Release,
}

/// From what is read: `host` forwards everything (`conf/all/forwarding`), the master
/// forwards (its own setting or, for IPv6, `all`), the setting is `ours`.
fn master_step(host: bool, master: bool, ours: bool) -> MasterStep {
    match (ours, host, master) {
        (true, true, _) => MasterStep::Release,
        (true, false, _) | (false, _, false) => MasterStep::Take,
        (false, _, true) => MasterStep::Leave,
    }
}

/// The routing table of the port whose master has this ifindex.
pub fn table(master_index: u32) -> u32 {
    TABLE_BASE.wrapping_add(master_index & 0xffff)
}

fn kernel(e: RtnlError) -> io::Error {
    io::Error::other(e)
}

fn exists_ok(r: Result<(), RtnlError>) -> io::Result<()> {
    match r {
        Err(e) if e.errno() == Some(EEXIST) => Ok(()),
        r => r.map_err(kernel),
    }
}

fn sysctl_path(v6: bool, dev: &str, key: &str) -> String {
    let fam = if v6 { "ipv6" } else { "ipv4" };
    format!("/proc/sys/net/{fam}/conf/{dev}/{key}")
}

/// Reads a sysctl of `ns`.
fn read(ns: &NetNs, path: &str) -> io::Result<String> {
    let path = path.to_string();
    ns.run(move || std::fs::read_to_string(path))?
        .map(|s| s.trim().to_string())
}

/// Writes a sysctl of `ns`.
fn write(ns: &NetNs, path: &str, value: &str) -> io::Result<()> {
    let (path, value) = (path.to_string(), value.to_string());
    ns.run(move || std::fs::write(path, value))?
}

/// What is set up for one L3S port.
pub(super) struct Routing {
    master_index: u32,
    master_name: String,
    table: u32,
    /// Slave address → (host end, master MAC) of its route and neighbour entry.
    routes: BTreeMap<IpAddr, (u32, MacAddr)>,
    /// Host ends whose forwarding is on: (ifindex, name).
    forwarding: BTreeSet<(u32, String)>,
    /// The master's forwarding was ours to turn on (IPv4, IPv6): a blackhole rule
    /// stands after the table's.
    master_forwarding: [bool; 2],
    /// The rules and the master's sysctls are in place.
    ruled: bool,
}

impl Routing {
    pub fn new(master_index: u32, master_name: &str) -> Self {
        Self {
            master_index,
            master_name: master_name.to_string(),
            table: table(master_index),
            routes: BTreeMap::new(),
            forwarding: BTreeSet::new(),
            master_forwarding: [false; 2],
            ruled: false,
        }
    }

    /// The kernel dropped the neighbour entries (a NOARP or MAC change), or the routes
    /// and neighbour entries (the device went down), through host ends `indices`: the
    /// next [`Self::sync`] makes the slaves' again (a route still there is no error).
    pub fn entries_dropped(&mut self, indices: &BTreeSet<u32>) {
        self.routes.retain(|_, (index, _)| !indices.contains(index));
    }

    /// Brings routes, neighbour entries, rules and sysctls in line with the port:
    /// `ends` are its host ends (slave, ifindex, name).
    pub fn sync(
        &mut self,
        ns: &NetNs,
        rtnl: &mut Rtnl,
        snap: &PortSnapshot,
        ends: &[(ipvlan_core::SlaveId, u32, String)],
    ) -> io::Result<()> {
        if !self.ruled {
            self.take_over(ns, rtnl)?;
        }
        for (_, index, name) in ends {
            if self.forwarding.contains(&(*index, name.clone())) {
                continue;
            }
            write(ns, &sysctl_path(false, name, "forwarding"), "1")?;
            write(ns, &sysctl_path(true, name, "force_forwarding"), "1")?;
            self.forwarding.insert((*index, name.clone()));
        }
        let live: BTreeSet<u32> = ends.iter().map(|(_, i, _)| *i).collect();
        self.forwarding.retain(|(i, _)| live.contains(i));

        let want: BTreeMap<IpAddr, (u32, MacAddr)> = snap
            .table
            .iter()
            .filter_map(|(ip, id)| {
                let (_, index, _) = ends.iter().find(|(s, _, _)| *s == id)?;
                Some((ip, (*index, snap.master_mac)))
            })
            .collect();
        let gone: Vec<(IpAddr, (u32, MacAddr))> = self
            .routes
            .iter()
            .filter(|(ip, e)| want.get(ip) != Some(e))
            .map(|(ip, e)| (*ip, *e))
            .collect();
        for (ip, (index, _)) in gone {
            // A host end that went took its route and neighbour entry with it.
            let _ = rtnl.del_route(&self.route(ip, index));
            let _ = rtnl.permanent_neighbour(index, ip, None);
            self.routes.remove(&ip);
        }
        for (ip, e @ (index, mac)) in want {
            if self.routes.contains_key(&ip) {
                continue;
            }
            rtnl.permanent_neighbour(index, ip, Some(mac.0))
                .map_err(kernel)?;
            match rtnl.add_route(&self.route(ip, index)) {
                // The host end is down (with the master): made when it comes up.
                Err(e) if e.errno() == Some(ENETDOWN) => continue,
                r => exists_ok(r)?,
            }
            self.routes.insert(ip, e);
        }

        if !self.ruled {
            for v6 in [false, true] {
                exists_ok(rtnl.iif_rule(true, v6, &self.master_name, Some(self.table), RULE_PREF))?;
            }
            self.master_forwarding(ns, rtnl)?;
            self.ruled = true;
        }
        Ok(())
    }

    /// A setting of the namespace changed (`conf`): where it is `all`'s, the master's
    /// or a host end's being turned off, the host ends' and the master's forwarding are
    /// brought back in line (see the module's notes). Anything else (another device,
    /// a host end's turned on, as the port's own writes do) is no concern of the port's.
    pub fn follow_forwarding(
        &mut self,
        ns: &NetNs,
        rtnl: &mut Rtnl,
        conf: &Netconf,
    ) -> io::Result<()> {
        if !self.ruled {
            return Ok(());
        }
        let ends: Vec<&str> = match conf.ifindex {
            NETCONF_ALL => self.forwarding.iter().map(|(_, n)| n.as_str()).collect(),
            i if u32::try_from(i) == Ok(self.master_index) => vec![],
            i => match self
                .forwarding
                .iter()
                .find(|(e, _)| u32::try_from(i) == Ok(*e))
            {
                Some((_, name)) if conf.forwarding != Some(true) => vec![name.as_str()],
                _ => return Ok(()),
            },
        };
        for name in ends {
            for (v6, key) in [(false, "forwarding"), (true, "force_forwarding")] {
                let path = sysctl_path(v6, name, key);
                // A host end that went took its sysctls with it.
                if read(ns, &path).is_ok_and(|v| v == "0") {
                    write(ns, &path, "1")?;
                }
            }
        }
        self.master_forwarding(ns, rtnl)
    }

    /// The master was renamed: the rules, which name it, are made again under its new
    /// name (the kernel detaches a rule whose `iif` name no device has).
    pub fn master_renamed(&mut self, ns: &NetNs, rtnl: &mut Rtnl, name: &str) -> io::Result<()> {
        let old = std::mem::replace(&mut self.master_name, name.to_string());
        if !self.ruled {
            return Ok(());
        }
        for v6 in [false, true] {
            let _ = rtnl.iif_rule(false, v6, &old, Some(self.table), RULE_PREF);
            exists_ok(rtnl.iif_rule(true, v6, name, Some(self.table), RULE_PREF))?;
            if self.master_forwarding[usize::from(v6)] {
                let _ = rtnl.iif_rule(false, v6, &old, None, RULE_PREF + 1);
                exists_ok(rtnl.iif_rule(true, v6, name, None, RULE_PREF + 1))?;
            }
        }
        self.master_forwarding(ns, rtnl)
    }

    /// Makes the master forward the slaves' traffic, per family: see [`master_step`].
    fn master_forwarding(&mut self, ns: &NetNs, rtnl: &mut Rtnl) -> io::Result<()> {
        for v6 in [false, true] {
            let fam = if v6 { "ipv6" } else { "ipv4" };
            let host = read(ns, &format!("/proc/sys/net/{fam}/conf/all/forwarding"))? != "0";
            let key = if v6 { "force_forwarding" } else { "forwarding" };
            let own = sysctl_path(v6, &self.master_name, key);
            let master = read(ns, &own)? != "0" || (v6 && host);
            let ours = &mut self.master_forwarding[usize::from(v6)];
            match master_step(host, master, *ours) {
                MasterStep::Leave => {}
                MasterStep::Take => {
                    exists_ok(rtnl.iif_rule(true, v6, &self.master_name, None, RULE_PREF + 1))?;
                    if read(ns, &own)? == "0" {
                        write(ns, &own, "1")?;
                    }
                    *ours = true;
                }
                MasterStep::Release => {
                    match rtnl.iif_rule(false, v6, &self.master_name, None, RULE_PREF + 1) {
                        Err(e) if e.errno() != Some(ENOENT) => return Err(kernel(e)),
                        _ => {}
                    }
                    if v6 {
                        // `all.forwarding` covers the master now; ours goes back to 0.
                        write(ns, &own, "0")?;
                    }
                    *ours = false;
                    tracing::info!(
                        "{fam} forwarding is on for the whole namespace: the master {}'s is the host's now",
                        self.master_name
                    );
                }
            }
        }
        Ok(())
    }

    fn route(&self, ip: IpAddr, index: u32) -> Route {
        Route {
            dst: ip,
            prefix: if ip.is_ipv4() { 32 } else { 128 },
            gw: None,
            oif: Some(index),
            table: self.table,
            priority: None,
        }
    }

    /// What an earlier daemon left for this port: the table's routes go (they are
    /// made again), and a blackhole rule says the master's forwarding was its to turn on.
    fn take_over(&mut self, _ns: &NetNs, rtnl: &mut Rtnl) -> io::Result<()> {
        for r in rtnl.routes().map_err(kernel)? {
            if r.table == self.table {
                let _ = rtnl.del_route(&r);
            }
        }
        for v6 in [false, true] {
            let rules = rtnl.iif_rules(v6, &self.master_name).map_err(kernel)?;
            self.master_forwarding[usize::from(v6)] = rules
                .iter()
                .any(|&(p, t)| p == RULE_PREF + 1 && t.is_none());
        }
        Ok(())
    }

    /// Removes everything [`Self::sync`] set up; what is gone already is no error.
    pub fn remove(mut self, ns: &NetNs, rtnl: &mut Rtnl) {
        if !self.ruled {
            // Set up half way, or never: what an earlier daemon left is read first.
            let _ = self.take_over(ns, rtnl);
        }
        for v6 in [false, true] {
            if self.master_forwarding[usize::from(v6)] {
                let key = if v6 { "force_forwarding" } else { "forwarding" };
                if let Err(e) = write(ns, &sysctl_path(v6, &self.master_name, key), "0") {
                    tracing::warn!("restoring {key} of {}: {e}", self.master_name);
                }
                let _ = rtnl.iif_rule(false, v6, &self.master_name, None, RULE_PREF + 1);
            }
            let _ = rtnl.iif_rule(false, v6, &self.master_name, Some(self.table), RULE_PREF);
        }
        for (ip, (index, _)) in std::mem::take(&mut self.routes) {
            let _ = rtnl.del_route(&self.route(ip, index));
            let _ = rtnl.permanent_neighbour(index, ip, None);
        }
        for r in rtnl.routes().unwrap_or_default() {
            if r.table == self.table {
                let _ = rtnl.del_route(&r);
            }
        }
        let default =
            read(ns, "/proc/sys/net/ipv4/conf/default/forwarding").unwrap_or_else(|_| "0".into());
        for (_, name) in &self.forwarding {
            // Host ends that went took their sysctls with them.
            let _ = write(ns, &sysctl_path(false, name, "forwarding"), &default);
            let _ = write(ns, &sysctl_path(true, name, "force_forwarding"), "0");
        }
        tracing::debug!("L3S routing of master {} removed", self.master_index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masters_forwarding_is_ours_only_while_the_host_does_not_forward() {
        use MasterStep::*;
        // Port made on a host that does not forward: ours.
        assert_eq!(master_step(false, false, false), Take);
        // A master the admin made forward (its own setting or the host's): theirs.
        assert_eq!(master_step(false, true, false), Leave);
        assert_eq!(master_step(true, true, false), Leave);
        // Ours, and the host still does not forward: kept (put back if turned off).
        assert_eq!(master_step(false, true, true), Take);
        assert_eq!(master_step(false, false, true), Take);
        // Ours, and the host turned forwarding on for everything: theirs now.
        assert_eq!(master_step(true, true, true), Release);
        // The host turned it off for everything, the master's included: ours again.
        assert_eq!(master_step(false, false, false), Take);
    }

    #[test]
    fn each_master_has_a_table_of_its_own_in_the_range() {
        assert_eq!(table(3), 0x1a5c_0003);
        assert_ne!(table(3), table(4));
        assert!(table(0x1_2345) >= TABLE_BASE && table(0x1_2345) <= TABLE_BASE + 0xffff);
    }
}

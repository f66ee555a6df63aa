//! Where slaves are and what the kernel says about them: relocation across
//! namespaces, and the address, link and multicast events of slaves; events about a
//! master or a host end go on to `master.rs` and `hostend.rs`.

use std::net::IpAddr;

use ipvlan_core::{MacAddr, Mode, PortError, SlaveId, ip_multicast_mac};
use ipvlan_proto::Notice;
use ipvlan_sys::netns::{all_namespaces, named_namespaces};
use ipvlan_sys::rtnl::{Addr, Event, IFF_ALLMULTI, IFF_NOARP, IFF_PROMISC, Link, LinkChange, Rtnl};
use ipvlan_sys::{NetNs, NsKey};

use super::portmap::PortKey;
use super::{Daemon, IPV6_MIN_MTU, Loc, PortRec, SlaveRec, eui64_link_local, slave_link_local};

impl Daemon {
    /// The namespace with id `nsid` in the port namespace `key`.
    pub(super) fn ns_of(&mut self, key: NsKey, nsid: Option<i32>) -> Option<NetNs> {
        let w = self.watched.get_mut(&key)?;
        let Some(nsid) = nsid else {
            return w.ns.try_clone().ok();
        };
        if let Some(path) = w.nsid_paths.get(&nsid)
            && let Ok(ns) = NetNs::open(path)
            && matches!(w.rtnl.nsid_of(&ns), Ok(Some(i)) if i == nsid)
        {
            return Some(ns);
        }
        for (path, ns) in all_namespaces() {
            if matches!(w.rtnl.nsid_of(&ns), Ok(Some(i)) if i == nsid) {
                w.nsid_paths.insert(nsid, path);
                return Some(ns);
            }
        }
        None
    }

    /// Runs `f` with a request socket in the slave's current namespace.
    pub(super) fn with_slave_rtnl<T>(
        &mut self,
        k: PortKey,
        id: SlaveId,
        f: impl FnOnce(&mut Rtnl, u32) -> T,
    ) -> Option<(NsKey, T)> {
        let loc = self.ports.get(k)?.slaves.get(&id)?.loc?;
        let key = k.ns;
        if loc.nsid.is_none() {
            let w = self.watched.get_mut(&key)?;
            return Some((key, f(&mut w.rtnl, loc.index)));
        }
        let ns = self.ns_of(key, loc.nsid)?;
        let mut rt = Rtnl::in_ns(&ns).ok()?;
        Some((ns.key(), f(&mut rt, loc.index)))
    }

    pub(super) fn slave_link(&mut self, k: PortKey, id: SlaveId) -> Option<(NsKey, Option<Link>)> {
        self.with_slave_rtnl(k, id, |rt, index| rt.link_by_index(index).ok().flatten())
    }

    pub(super) fn set_noarp(&mut self, k: PortKey, id: SlaveId) {
        let noarp = self.ports[k].port.mode() != Mode::L2;
        let change = LinkChange {
            flags_set: if noarp { IFF_NOARP } else { 0 },
            flags_clear: if noarp { 0 } else { IFF_NOARP },
            ..Default::default()
        };
        if let Some((_, Err(e))) =
            self.with_slave_rtnl(k, id, |rt, index| rt.set_link(index, &change))
        {
            tracing::warn!("setting NOARP on a slave: {e}");
        }
    }

    /// L3 and L3S slaves are NOARP, L2 slaves are not (spec §4.3).
    pub(super) fn apply_noarp(&mut self, k: PortKey) {
        let ids: Vec<SlaveId> = self.ports[k].slaves.keys().copied().collect();
        for id in ids {
            self.set_noarp(k, id);
        }
    }

    /// Finds the slave end again from its host end, then reads its state there.
    pub(super) fn relocate(&mut self, k: PortKey, id: SlaveId) {
        let key = k.ns;
        let host_index = self.ports[k].slaves[&id].host_index;
        let host = self
            .watched
            .get_mut(&key)
            .and_then(|w| w.rtnl.link_by_index(host_index).ok().flatten());
        let Some(host) = host else {
            // The pair is gone (either end deleted, or its namespace destroyed).
            self.remove_slave(k, id, false);
            return;
        };
        let Some(peer) = host.link.filter(|&i| i != 0) else {
            self.remove_slave(k, id, true);
            return;
        };
        let loc = Loc {
            nsid: host.link_netnsid,
            index: peer,
        };
        let rec = self.ports[k].slaves.get_mut(&id).expect("caller checked");
        if rec.loc == Some(loc) {
            return;
        }
        rec.loc = Some(loc);
        self.sync_slave(k, id);
        let key = k.ns;
        let netns = match loc.nsid {
            None => Some(key),
            Some(_) => self.ns_of(key, loc.nsid).map(|n| n.key()),
        };
        let netns = netns
            .map(|k| {
                named_namespaces()
                    .into_iter()
                    .find(|(_, n)| *n == k)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|| k.to_string())
            })
            .unwrap_or_else(|| "?".into());
        let p = &self.ports[k];
        let (slave, master) = (p.slaves[&id].name.clone(), p.master_name.clone());
        self.notify(Notice::SlaveMoved {
            slave,
            master,
            netns,
        });
    }

    /// Reads a slave's link, addresses and groups and makes the port agree.
    pub(super) fn sync_slave(&mut self, k: PortKey, id: SlaveId) {
        let got = self.with_slave_rtnl(k, id, |rt, index| {
            let link = rt.link_by_index(index).ok().flatten();
            if link.is_some() {
                let _ = rt.set_link(
                    index,
                    &LinkChange {
                        ipv6_autoconf: Some(false),
                        ..Default::default()
                    },
                );
            }
            let addrs: Vec<Addr> = rt
                .addrs()
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.index == index)
                .collect();
            let groups: Vec<IpAddr> = rt
                .mcasts()
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m.index == index)
                .map(|m| m.group)
                .collect();
            (link, addrs, groups)
        });
        let Some((_, (Some(link), addrs, groups))) = got else {
            return;
        };
        let p = &mut self.ports[k];
        let old: Vec<IpAddr> = p
            .port
            .slave(id)
            .map(|s| s.addrs.clone())
            .unwrap_or_default();
        for ip in old {
            if !addrs.iter().any(|a| a.ip == ip) {
                self.forget_addr(k, id, ip);
            }
        }
        let p = &mut self.ports[k];
        if let Some(mc) = p.port.mc_filter_mut(id) {
            mc.replace(groups.into_iter().filter_map(ip_multicast_mac));
        }
        self.on_link(k, id, &link);
        for a in addrs {
            self.on_new_addr(k, id, a);
        }
    }

    pub(super) fn on_link(&mut self, k: PortKey, id: SlaveId, link: &Link) {
        let p = &mut self.ports[k];
        let Some(rec) = p.slaves.get_mut(&id) else {
            return;
        };
        rec.flags = link.flags;
        rec.name = link.name.clone();
        let had_ipv6 = rec.mtu >= IPV6_MIN_MTU;
        if link.mtu != 0 {
            rec.mtu = link.mtu;
        }
        let ipv6 = rec.mtu >= IPV6_MIN_MTU;
        let up = link.is_up();
        p.port.set_slave_up(id, up);
        if let Some(mc) = p.port.mc_filter_mut(id) {
            mc.set_all(link.flags & (IFF_PROMISC | IFF_ALLMULTI) != 0);
        }
        if ipv6 && !had_ipv6 {
            // IPv6 came (back) with the MTU, its address generation the kernel's
            // default again.
            let change = LinkChange {
                ipv6_autoconf: Some(false),
                ..Default::default()
            };
            self.change_slave(k, id, &change, "turning off a slave's IPv6 autoconf");
        }
        if up && ipv6 {
            self.ensure_link_local(k, id);
        }
        let master_mac = self.ports[k].port.master_mac();
        if link.mac.is_some_and(|m| MacAddr(m) != master_mac) {
            // The kernel refuses this (EOPNOTSUPP): a slave carries the master's MAC.
            tracing::warn!(
                "{}: MAC changed from inside its namespace; restored the master's (Operation not supported)",
                link.name
            );
            let change = LinkChange {
                mac: Some(master_mac.0),
                ..Default::default()
            };
            self.change_slave(k, id, &change, "restoring a slave's MAC");
        }
    }

    /// Gives an up slave the dev_id link-local the kernel would have generated.
    pub(super) fn ensure_link_local(&mut self, k: PortKey, id: SlaveId) {
        let p = &self.ports[k];
        let ll = IpAddr::V6(slave_link_local(p.port.master_mac(), id.0));
        if p.port.slave(id).is_some_and(|s| s.addrs.contains(&ll)) {
            return;
        }
        if p.slaves.get(&id).is_some_and(|s| s.mtu < IPV6_MIN_MTU) {
            return; // no IPv6 at this MTU, as with the kernel's slave
        }
        let r = self.with_slave_rtnl(k, id, |rt, index| {
            rt.add_addr(&Addr {
                index,
                ip: ll,
                prefix: 64,
            })
        });
        match r {
            Some((_, Ok(()))) | None => {}
            Some((_, Err(e))) if e.errno() == Some(nix::errno::Errno::EEXIST as i32) => {}
            // The MTU went below IPV6_MIN_MTU since the event read: its own event follows.
            Some((_, Err(e))) if e.errno() == Some(nix::errno::Errno::EINVAL as i32) => {
                tracing::debug!("adding the link-local {ll}: {e} (no IPv6 at its MTU now)");
            }
            Some((_, Err(e))) => tracing::warn!("adding the link-local {ll}: {e}"),
        }
    }

    pub(super) fn on_new_addr(&mut self, k: PortKey, id: SlaveId, a: Addr) {
        let mac = self.ports[k].port.master_mac();
        if a.ip == IpAddr::V6(eui64_link_local(mac)) {
            // Every slave would generate this one: replace it by the dev_id form.
            let _ = self.with_slave_rtnl(k, id, |rt, _| rt.del_addr(&a));
            self.ensure_link_local(k, id);
            return;
        }
        let p = &mut self.ports[k];
        if p.port.slave(id).is_some_and(|s| s.addrs.contains(&a.ip)) {
            return; // a repeated notification (flags changed, DAD finished)
        }
        let name = |p: &PortRec, id| {
            p.slaves
                .get(&id)
                .map(|s| s.name.clone())
                .unwrap_or_default()
        };
        let (slave, master) = (name(p, id), p.master_name.clone());
        if self.host_clash(k, a.ip) {
            let _ = self.with_slave_rtnl(k, id, |rt, _| rt.del_addr(&a));
            let addr = a.ip;
            return self.notify(Notice::AddrRefusedHost {
                slave,
                master,
                addr,
            });
        }
        let p = &mut self.ports[k];
        match p.port.add_addr(id, a.ip) {
            Ok(()) => self.notify(Notice::AddrLearned {
                slave,
                master,
                addr: a.ip,
            }),
            Err(PortError::AddrInUse { owner, .. }) => {
                let owner = name(p, owner);
                let _ = self.with_slave_rtnl(k, id, |rt, _| rt.del_addr(&a));
                self.notify(Notice::AddrRefused {
                    slave,
                    master,
                    addr: a.ip,
                    owner,
                });
            }
            Err(e) => tracing::warn!("address {}: {e}", a.ip),
        }
    }

    pub(super) fn forget_addr(&mut self, k: PortKey, id: SlaveId, ip: IpAddr) {
        let p = &mut self.ports[k];
        if p.port.remove_addr(id, ip) {
            let slave = p
                .slaves
                .get(&id)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            let master = p.master_name.clone();
            self.notify(Notice::AddrForgotten {
                slave,
                master,
                addr: ip,
            });
        }
    }

    pub(super) fn drain_monitor(&mut self, key: NsKey) {
        let mut evs = Vec::new();
        if let Some(w) = self.watched.get_mut(&key)
            && let Err(e) = w.monitor.read(&mut evs)
        {
            tracing::warn!("monitor in {key}: {e}");
        }
        let mut resync = false;
        for (nsid, ev) in evs {
            resync |= self.handle_event(key, nsid, ev);
        }
        if resync {
            self.master_addrs_changed(key);
        }
        for k in self.ports.in_ns(key) {
            if !self.ports.contains(k) {
                continue;
            }
            if resync {
                let ids: Vec<SlaveId> = self.ports[k].slaves.keys().copied().collect();
                for id in ids {
                    self.sync_slave(k, id);
                }
            }
            // Every port of this namespace: cheap, and the guard is only rewritten
            // when it changed.
            self.publish(k);
        }
    }

    /// The first slave of a port in namespace `key` for which `pred` holds.
    pub(super) fn slave_where(
        &self,
        key: NsKey,
        pred: impl Fn(&SlaveRec) -> bool,
    ) -> Option<(PortKey, SlaveId)> {
        self.ports
            .iter()
            .filter(|(k, _)| k.ns == key)
            .find_map(|(k, p)| {
                p.slaves
                    .iter()
                    .find(|(_, s)| pred(s))
                    .map(|(&id, _)| (k, id))
            })
    }

    /// Applies one event; true when state must be read again.
    pub(super) fn handle_event(&mut self, key: NsKey, nsid: Option<i32>, ev: Event) -> bool {
        let find =
            |d: &Self, index: u32| d.slave_where(key, |s| s.loc == Some(Loc { nsid, index }));
        match ev {
            Event::Overrun => return true,
            Event::NewLink(l) => {
                if let Some((k, id)) = find(self, l.index) {
                    self.on_link(k, id, &l);
                } else if let Some(lower) = l.link
                    && l.link_netnsid.is_none()
                    && let Some((k, id)) = find(self, lower)
                    && l.kind.as_deref().is_some_and(|k| k != "veth")
                {
                    self.refuse_upper(k, id, &l);
                } else if nsid.is_none() && l.is_loopback() {
                    self.on_loopback(key, &l);
                } else if nsid.is_none() {
                    self.on_master_link(key, &l);
                    self.check_host_end(key, l.index);
                }
                self.relocate_moving(key);
            }
            Event::DelLink(l) => {
                if let Some((k, id)) = find(self, l.index) {
                    // Moved away or deleted: the host end will tell which.
                    self.ports[k].slaves.get_mut(&id).expect("found").loc = None;
                    self.relocate(k, id);
                    return false;
                }
                if nsid.is_none() {
                    self.on_master_gone(key, &l);
                    if let Some((k, id)) = self.find_host_end(key, l.index) {
                        self.remove_slave(k, id, false);
                    }
                }
            }
            Event::NewAddr(a) => {
                if let Some((k, id)) = find(self, a.index) {
                    self.on_new_addr(k, id, a);
                } else if nsid.is_none() {
                    self.check_host_end(key, a.index);
                    self.master_addrs_changed(key);
                }
            }
            Event::DelAddr(a) => {
                if let Some((k, id)) = find(self, a.index) {
                    self.forget_addr(k, id, a.ip);
                } else if nsid.is_none() {
                    self.master_addrs_changed(key);
                }
            }
            Event::Netconf(conf) => {
                if nsid.is_none() {
                    self.forwarding_changed(key, &conf);
                }
            }
            Event::NewMcast(m) => {
                if let (Some((k, id)), Some(mac)) = (find(self, m.index), ip_multicast_mac(m.group))
                    && let Some(f) = self.ports[k].port.mc_filter_mut(id)
                {
                    f.add(mac);
                }
            }
            Event::DelMcast(m) => {
                if let (Some((k, id)), Some(mac)) = (find(self, m.index), ip_multicast_mac(m.group))
                    && let Some(f) = self.ports[k].port.mc_filter_mut(id)
                {
                    f.remove(mac);
                }
            }
        }
        false
    }

    /// Slaves between namespaces are looked for again after every link event.
    pub(super) fn relocate_moving(&mut self, key: NsKey) {
        let moving: Vec<(PortKey, SlaveId)> = self
            .ports
            .iter()
            .filter(|(k, _)| k.ns == key)
            .flat_map(|(k, p)| {
                p.slaves
                    .iter()
                    .filter(|(_, s)| s.loc.is_none())
                    .map(move |(&id, _)| (k, id))
            })
            .collect();
        for (k, id) in moving {
            if self
                .ports
                .get(k)
                .is_some_and(|p| p.slaves.contains_key(&id))
            {
                self.relocate(k, id);
            }
        }
    }

    /// A VLAN (or macvlan, ...) device made on top of a slave: the kernel's slaves are
    /// VLAN-challenged and cannot be lower devices (spec §7.3, §7.4), so it is deleted
    /// again and the refusal logged.
    pub(super) fn refuse_upper(&mut self, k: PortKey, id: SlaveId, upper: &Link) {
        let name = self.ports[k]
            .slaves
            .get(&id)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        tracing::warn!(
            "refused {} device {} on slave {name}: ipvlan slaves cannot carry VLANs or other upper devices (Operation not supported); deleted it",
            upper.kind.as_deref().unwrap_or("?"),
            upper.name
        );
        let index = upper.index;
        if let Some((_, Err(e))) = self.with_slave_rtnl(k, id, |rt, _| rt.del_link(index)) {
            tracing::warn!("deleting {}: {e}", upper.name);
        }
    }

    pub(super) fn change_slave(&mut self, k: PortKey, id: SlaveId, change: &LinkChange, why: &str) {
        if let Some((_, Err(e))) =
            self.with_slave_rtnl(k, id, |rt, index| rt.set_link(index, change))
        {
            tracing::warn!("{why}: {e}");
        }
    }
}

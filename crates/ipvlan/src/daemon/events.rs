//! Where slaves are and what the kernel says about them: relocation across
//! namespaces, address, link and multicast events, the master's changes.

use super::*;

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
        pi: usize,
        id: SlaveId,
        f: impl FnOnce(&mut Rtnl, u32) -> T,
    ) -> Option<(NsKey, T)> {
        let p = &self.ports[pi];
        let loc = p.slaves.get(&id)?.loc?;
        let key = p.ns;
        if loc.nsid.is_none() {
            let w = self.watched.get_mut(&key)?;
            return Some((key, f(&mut w.rtnl, loc.index)));
        }
        let ns = self.ns_of(key, loc.nsid)?;
        let mut rt = Rtnl::in_ns(&ns).ok()?;
        Some((ns.key(), f(&mut rt, loc.index)))
    }

    pub(super) fn slave_link(&mut self, pi: usize, id: SlaveId) -> Option<(NsKey, Option<Link>)> {
        self.with_slave_rtnl(pi, id, |rt, index| rt.link_by_index(index).ok().flatten())
    }

    pub(super) fn set_noarp(&mut self, pi: usize, id: SlaveId) {
        let noarp = self.ports[pi].port.mode() != Mode::L2;
        let change = LinkChange {
            flags_set: if noarp { IFF_NOARP } else { 0 },
            flags_clear: if noarp { 0 } else { IFF_NOARP },
            ..Default::default()
        };
        if let Some((_, Err(e))) =
            self.with_slave_rtnl(pi, id, |rt, index| rt.set_link(index, &change))
        {
            tracing::warn!("setting NOARP on a slave: {e}");
        }
    }

    /// L3 and L3S slaves are NOARP, L2 slaves are not (spec §4.3).
    pub(super) fn apply_noarp(&mut self, pi: usize) {
        let ids: Vec<SlaveId> = self.ports[pi].slaves.keys().copied().collect();
        for id in ids {
            self.set_noarp(pi, id);
        }
    }

    /// Finds the slave end again from its host end, then reads its state there.
    pub(super) fn relocate(&mut self, pi: usize, id: SlaveId) {
        let key = self.ports[pi].ns;
        let host_index = self.ports[pi].slaves[&id].host_index;
        let host = self
            .watched
            .get_mut(&key)
            .and_then(|w| w.rtnl.link_by_index(host_index).ok().flatten());
        let Some(host) = host else {
            // The pair is gone (either end deleted, or its namespace destroyed).
            self.remove_slave(pi, id, false);
            return;
        };
        let Some(peer) = host.link.filter(|&i| i != 0) else {
            self.remove_slave(pi, id, true);
            return;
        };
        let loc = Loc {
            nsid: host.link_netnsid,
            index: peer,
        };
        let rec = self.ports[pi].slaves.get_mut(&id).expect("caller checked");
        if rec.loc == Some(loc) {
            return;
        }
        rec.loc = Some(loc);
        self.sync_slave(pi, id);
        let key = self.ports[pi].ns;
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
        let p = &self.ports[pi];
        let (slave, master) = (p.slaves[&id].name.clone(), p.master_name.clone());
        self.notify(Notice::SlaveMoved {
            slave,
            master,
            netns,
        });
    }

    /// Reads a slave's link, addresses and groups and makes the port agree.
    pub(super) fn sync_slave(&mut self, pi: usize, id: SlaveId) {
        let got = self.with_slave_rtnl(pi, id, |rt, index| {
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
        let p = &mut self.ports[pi];
        let old: Vec<IpAddr> = p
            .port
            .slave(id)
            .map(|s| s.addrs.clone())
            .unwrap_or_default();
        for ip in old {
            if !addrs.iter().any(|a| a.ip == ip) {
                self.forget_addr(pi, id, ip);
            }
        }
        let p = &mut self.ports[pi];
        if let Some(mc) = p.port.mc_filter_mut(id) {
            mc.replace(groups.into_iter().filter_map(ip_multicast_mac));
        }
        self.on_link(pi, id, &link);
        for a in addrs {
            self.on_new_addr(pi, id, a);
        }
    }

    pub(super) fn on_link(&mut self, pi: usize, id: SlaveId, link: &Link) {
        let p = &mut self.ports[pi];
        let Some(rec) = p.slaves.get_mut(&id) else {
            return;
        };
        rec.flags = link.flags;
        rec.name = link.name.clone();
        let up = link.is_up();
        p.port.set_slave_up(id, up);
        if let Some(mc) = p.port.mc_filter_mut(id) {
            mc.set_all(link.flags & (IFF_PROMISC | IFF_ALLMULTI) != 0);
        }
        if up {
            self.ensure_link_local(pi, id);
        }
        let master_mac = self.ports[pi].port.master_mac();
        if link.mac.is_some_and(|m| m != master_mac) {
            // The kernel refuses this (EOPNOTSUPP): a slave carries the master's MAC.
            tracing::warn!(
                "{}: MAC changed from inside its namespace; restored the master's (Operation not supported)",
                link.name
            );
            let change = LinkChange {
                mac: Some(master_mac),
                ..Default::default()
            };
            self.change_slave(pi, id, &change, "restoring a slave's MAC");
        }
    }

    /// Gives an up slave the dev_id link-local the kernel would have generated.
    pub(super) fn ensure_link_local(&mut self, pi: usize, id: SlaveId) {
        let p = &self.ports[pi];
        let ll = IpAddr::V6(slave_link_local(p.port.master_mac(), id.0));
        if p.port.slave(id).is_some_and(|s| s.addrs.contains(&ll)) {
            return;
        }
        let r = self.with_slave_rtnl(pi, id, |rt, index| {
            rt.add_addr(&Addr {
                index,
                ip: ll,
                prefix: 64,
            })
        });
        match r {
            Some((_, Ok(()))) | None => {}
            Some((_, Err(e))) if e.errno() == Some(nix::errno::Errno::EEXIST as i32) => {}
            Some((_, Err(e))) => tracing::warn!("adding the link-local {ll}: {e}"),
        }
    }

    pub(super) fn on_new_addr(&mut self, pi: usize, id: SlaveId, a: Addr) {
        let mac = self.ports[pi].port.master_mac();
        if a.ip == IpAddr::V6(eui64_link_local(mac)) {
            // Every slave would generate this one: replace it by the dev_id form.
            let _ = self.with_slave_rtnl(pi, id, |rt, _| rt.del_addr(&a));
            self.ensure_link_local(pi, id);
            return;
        }
        let p = &mut self.ports[pi];
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
        match p.port.add_addr(id, a.ip) {
            Ok(()) => self.notify(Notice::AddrLearned {
                slave,
                master,
                addr: a.ip.to_string(),
            }),
            Err(PortError::AddrInUse { owner, .. }) => {
                let owner = name(p, owner);
                let _ = self.with_slave_rtnl(pi, id, |rt, _| rt.del_addr(&a));
                self.notify(Notice::AddrRefused {
                    slave,
                    master,
                    addr: a.ip.to_string(),
                    owner,
                });
            }
            Err(e) => tracing::warn!("address {}: {e}", a.ip),
        }
    }

    pub(super) fn forget_addr(&mut self, pi: usize, id: SlaveId, ip: IpAddr) {
        let p = &mut self.ports[pi];
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
                addr: ip.to_string(),
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
        let ports: Vec<u32> = self
            .ports
            .iter()
            .filter(|p| p.ns == key)
            .map(|p| p.master_index)
            .collect();
        for master in ports {
            let Some(pi) = self
                .ports
                .iter()
                .position(|p| p.ns == key && p.master_index == master)
            else {
                continue;
            };
            if resync {
                let ids: Vec<SlaveId> = self.ports[pi].slaves.keys().copied().collect();
                for id in ids {
                    self.sync_slave(pi, id);
                }
            }
            // Every port of this namespace: cheap, and the guard is only rewritten
            // when it changed.
            self.publish(pi);
        }
    }

    /// The first slave of a port in namespace `key` for which `pred` holds.
    pub(super) fn slave_where(
        &self,
        key: NsKey,
        pred: impl Fn(&SlaveRec) -> bool,
    ) -> Option<(usize, SlaveId)> {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.ns == key)
            .find_map(|(pi, p)| {
                p.slaves
                    .iter()
                    .find(|(_, s)| pred(s))
                    .map(|(&id, _)| (pi, id))
            })
    }

    /// Applies one event; true when state must be read again.
    pub(super) fn handle_event(&mut self, key: NsKey, nsid: Option<i32>, ev: Event) -> bool {
        let find =
            |d: &Self, index: u32| d.slave_where(key, |s| s.loc == Some(Loc { nsid, index }));
        match ev {
            Event::Overrun => return true,
            Event::NewLink(l) => {
                if let Some((pi, id)) = find(self, l.index) {
                    self.on_link(pi, id, &l);
                } else if let Some(lower) = l.link
                    && l.link_netnsid.is_none()
                    && let Some((pi, id)) = find(self, lower)
                    && l.kind.as_deref().is_some_and(|k| k != "veth")
                {
                    self.refuse_upper(pi, id, &l);
                } else if nsid.is_none() {
                    self.on_master_link(key, &l);
                    self.check_host_end(key, l.index);
                }
                self.relocate_moving(key);
            }
            Event::DelLink(l) => {
                if let Some((pi, id)) = find(self, l.index) {
                    // Moved away or deleted: the host end will tell which.
                    self.ports[pi].slaves.get_mut(&id).expect("found").loc = None;
                    self.relocate(pi, id);
                    return false;
                }
                if nsid.is_none() {
                    self.on_master_gone(key, &l);
                    if let Some((pi, id)) = self.find_host_end(key, l.index) {
                        self.remove_slave(pi, id, false);
                    }
                }
            }
            Event::NewAddr(a) => {
                if let Some((pi, id)) = find(self, a.index) {
                    self.on_new_addr(pi, id, a);
                } else if nsid.is_none() {
                    self.strip_host_end_addr(key, &a);
                    self.master_addrs_changed(key);
                }
            }
            Event::DelAddr(a) => {
                if let Some((pi, id)) = find(self, a.index) {
                    self.forget_addr(pi, id, a.ip);
                } else if nsid.is_none() {
                    self.master_addrs_changed(key);
                }
            }
            Event::NewMcast(m) => {
                if let (Some((pi, id)), Some(mac)) =
                    (find(self, m.index), ip_multicast_mac(m.group))
                    && let Some(f) = self.ports[pi].port.mc_filter_mut(id)
                {
                    f.add(mac);
                }
            }
            Event::DelMcast(m) => {
                if let (Some((pi, id)), Some(mac)) =
                    (find(self, m.index), ip_multicast_mac(m.group))
                    && let Some(f) = self.ports[pi].port.mc_filter_mut(id)
                {
                    f.remove(mac);
                }
            }
        }
        false
    }

    /// An address of the master's namespace `key` came or went: the fast paths there
    /// read them again (L3 egress keeps local destinations off the kernel's routing).
    fn master_addrs_changed(&mut self, key: NsKey) {
        let Some(w) = self.watched.get_mut(&key) else {
            return;
        };
        for p in self.ports.iter_mut().filter(|p| p.ns == key) {
            if let Some(Err(e)) = p.fast.as_mut().map(|f| f.local_addrs_changed(&mut w.rtnl)) {
                tracing::warn!("the local addresses of {}'s namespace: {e}", p.master_name);
            }
        }
    }

    /// Slaves between namespaces are looked for again after every link event.
    pub(super) fn relocate_moving(&mut self, key: NsKey) {
        let moving: Vec<(usize, SlaveId)> = self
            .ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.ns == key)
            .flat_map(|(pi, p)| {
                p.slaves
                    .iter()
                    .filter(|(_, s)| s.loc.is_none())
                    .map(move |(&id, _)| (pi, id))
            })
            .collect();
        for (pi, id) in moving.into_iter().rev() {
            if pi < self.ports.len() && self.ports[pi].slaves.contains_key(&id) {
                self.relocate(pi, id);
            }
        }
    }

    /// The master changed: slaves follow its name, MAC (spec §7.1), MTU (§7.2) and
    /// carrier (§7.4: the host ends go down with it, so the slaves lose carrier).
    pub(super) fn on_master_link(&mut self, key: NsKey, l: &Link) {
        let Some(pi) = self
            .ports
            .iter()
            .position(|p| p.ns == key && p.master_index == l.index)
        else {
            return;
        };
        let ids: Vec<SlaveId> = self.ports[pi].slaves.keys().copied().collect();
        let p = &mut self.ports[pi];
        if !l.name.is_empty() && p.master_name != l.name {
            p.master_name = l.name.clone();
        }
        if let Some(mac) = l.mac
            && mac != p.port.master_mac()
        {
            p.port.set_master_mac(mac);
            let change = LinkChange {
                mac: Some(mac),
                ..Default::default()
            };
            for &id in &ids {
                self.change_slave(pi, id, &change, "following the master's MAC");
            }
        }
        let p = &mut self.ports[pi];
        if l.mtu != 0 && l.mtu != p.master_mtu {
            p.master_mtu = l.mtu;
            let change = LinkChange {
                mtu: Some(l.mtu),
                ..Default::default()
            };
            for &id in &ids {
                self.change_slave(pi, id, &change, "following the master's MTU");
            }
        }
        let p = &mut self.ports[pi];
        let running = l.flags & (IFF_UP | IFF_LOWER_UP) == IFF_UP | IFF_LOWER_UP;
        if running != p.master_running {
            p.master_running = running;
            let master = p.master_name.clone();
            let hosts: Vec<u32> = p.slaves.values().map(|s| s.host_index).collect();
            if let Some(w) = self.watched.get_mut(&key) {
                let change = LinkChange {
                    flags_set: if running { IFF_UP } else { 0 },
                    flags_clear: if running { 0 } else { IFF_UP },
                    ..Default::default()
                };
                for h in hosts {
                    if let Err(e) = w.rtnl.set_link(h, &change) {
                        tracing::warn!("carrier of a host end: {e}");
                    }
                }
            }
            self.notify(if running {
                Notice::MasterUp { master }
            } else {
                Notice::MasterDown { master }
            });
        }
    }

    /// A VLAN (or macvlan, ...) device made on top of a slave: the kernel's slaves are
    /// VLAN-challenged and cannot be lower devices (spec §7.3, §7.4), so it is deleted
    /// again and the refusal logged.
    pub(super) fn refuse_upper(&mut self, pi: usize, id: SlaveId, upper: &Link) {
        let name = self.ports[pi]
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
        if let Some((_, Err(e))) = self.with_slave_rtnl(pi, id, |rt, _| rt.del_link(index)) {
            tracing::warn!("deleting {}: {e}", upper.name);
        }
    }

    pub(super) fn change_slave(&mut self, pi: usize, id: SlaveId, change: &LinkChange, why: &str) {
        if let Some((_, Err(e))) =
            self.with_slave_rtnl(pi, id, |rt, index| rt.set_link(index, change))
        {
            tracing::warn!("{why}: {e}");
        }
    }

    /// The master left its namespace: deleted (its slaves go with it, spec §7.5) or
    /// moved (the port follows it: host ends, sockets, guard).
    pub(super) fn on_master_gone(&mut self, key: NsKey, l: &Link) {
        let Some(pi) = self
            .ports
            .iter()
            .position(|p| p.ns == key && p.master_index == l.index)
        else {
            return;
        };
        match (l.new_netnsid, l.new_ifindex) {
            (Some(nsid), Some(index)) => {
                if let Err(e) = self.follow_master(pi, nsid, index) {
                    tracing::error!(
                        "following master {} to another namespace: {}",
                        l.name,
                        e.msg
                    );
                }
            }
            _ => {
                tracing::info!("master {} deleted: removing its slaves", l.name);
                let ids: Vec<SlaveId> = self.ports[pi].slaves.keys().copied().collect();
                let master = self.ports[pi].master_index;
                for id in ids {
                    if let Some(pi) = self
                        .ports
                        .iter()
                        .position(|p| p.ns == key && p.master_index == master)
                    {
                        self.remove_slave(pi, id, true);
                    }
                }
            }
        }
    }

    pub(super) fn follow_master(&mut self, pi: usize, nsid: i32, index: u32) -> Result<(), Fail> {
        self.leave_l3s(pi);
        let old = self.ports[pi].ns;
        let new_ns = self
            .ns_of(old, Some(nsid))
            .ok_or_else(|| refused("cannot find the master's new namespace"))?;
        let hosts: Vec<(SlaveId, u32, String)> = self.ports[pi]
            .slaves
            .iter()
            .map(|(&id, s)| (id, s.host_index, s.host_name.clone()))
            .collect();
        {
            let w = self
                .watched
                .get_mut(&old)
                .expect("port namespace is watched");
            for (_, h, _) in &hosts {
                w.rtnl.set_link(
                    *h,
                    &LinkChange {
                        netns_fd: Some(new_ns.as_raw_fd()),
                        ..Default::default()
                    },
                )?;
            }
            let _ = nft::apply(&w.ns, &guard::teardown(self.ports[pi].master_index));
        }
        self.watch(&new_ns)?;
        let kind = self.ports[pi].kind;
        let w = self.watched.get_mut(&new_ns.key()).expect("just watched");
        let master = w
            .rtnl
            .link_by_index(index)?
            .ok_or_else(|| refused("the moved master vanished"))?;
        let master_sock =
            Arc::new(w.ns.run(|| PacketSocket::open_ring(index, kind.ring_slots(true, 0)))??);
        let raw = w.ns.run(|| RawSender::open(index, EGRESS_MARK))??;
        let mut found = Vec::new();
        for (n, (id, _, name)) in hosts.iter().enumerate() {
            let host = w
                .rtnl
                .link_by_name(name)?
                .ok_or_else(|| refused(format!("host end {name} vanished")))?;
            // A move resets the device's IPv6 settings: no addresses, before it is up.
            w.rtnl.set_link(
                host.index,
                &LinkChange {
                    ipv6_autoconf: Some(false),
                    ..Default::default()
                },
            )?;
            w.rtnl.set_link(
                host.index,
                &LinkChange {
                    flags_set: IFF_UP,
                    ..Default::default()
                },
            )?;
            let sock =
                w.ns.run(|| PacketSocket::open_ring(host.index, kind.ring_slots(false, n)))??;
            found.push((*id, host.index, sock));
        }
        let p = &mut self.ports[pi];
        p.backend = UserBackend::start(
            master_sock.clone(),
            Some(raw),
            Plan::new(p.port.snapshot(), vec![], None, false),
            self.busy_poll,
        )?;
        p.master_sock = master_sock;
        p.filtered_for = None;
        p.ns = new_ns.key();
        p.master_index = index;
        p.master_name = master.name.clone();
        p.prog = None;
        p.l3s_prog = None;
        p.fast = None;
        for (id, h, sock) in found {
            if let Some(rec) = p.slaves.get_mut(&id) {
                rec.host_index = h;
                rec.sock = Arc::new(sock);
                rec.loc = None;
            }
        }
        for (id, _, _) in &hosts {
            self.relocate(pi, *id);
        }
        if !self.ports.iter().any(|q| q.ns == old) {
            self.unwatch(old);
        }
        tracing::info!(
            "port of {} followed its master to {}",
            master.name,
            new_ns.key()
        );
        self.sync_l3s(pi)?;
        self.publish(pi);
        Ok(())
    }
}

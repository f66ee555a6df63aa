//! The master's changes: its name, MAC, MTU and carrier followed by the slaves, its
//! namespace's addresses handed to the fast paths, and the master deleted (the port
//! goes) or moved to another namespace (the port follows it).

use std::os::fd::AsRawFd;
use std::sync::Arc;

use ipvlan_core::{MacAddr, SlaveId};
use ipvlan_datapath::kernel::{self, Datapath};
use ipvlan_datapath::{EGRESS_MARK, guard};
use ipvlan_proto::Notice;
use ipvlan_sys::packet::PacketSocket;
use ipvlan_sys::raw::RawSender;
use ipvlan_sys::rtnl::{IFF_LOWER_UP, IFF_UP, Link, LinkChange, Netconf};
use ipvlan_sys::{NsKey, nft};

use super::hostend;
use super::portmap::PortKey;
use super::{Daemon, Error};

impl Daemon {
    /// An address of the master's namespace `key` came or went: the fast paths there
    /// read them again (L3 egress keeps local destinations off the kernel's routing).
    pub(super) fn master_addrs_changed(&mut self, key: NsKey) {
        let Some(w) = self.watched.get_mut(&key) else {
            return;
        };
        for (_, p) in self.ports.values_mut().filter(|(k, _)| k.ns == key) {
            if let Err(e) = p.datapath.local_addrs_changed(&mut w.rtnl) {
                tracing::warn!("the local addresses of {}'s namespace: {e}", p.master_name);
            }
        }
    }

    /// A setting of namespace `key` changed (`conf`): the ports' L3S routing follows.
    pub(super) fn forwarding_changed(&mut self, key: NsKey, conf: &Netconf) {
        let Some(w) = self.watched.get_mut(&key) else {
            return;
        };
        for (_, p) in self.ports.values_mut().filter(|(k, _)| k.ns == key) {
            if let Err(e) = p.datapath.forwarding_changed(&w.ns, &mut w.rtnl, conf) {
                tracing::warn!(
                    "following the forwarding of {}'s namespace: {e}",
                    p.master_name
                );
            }
        }
    }

    /// The master changed: slaves follow its name, MAC (spec §7.1), MTU (§7.2) and
    /// carrier (§7.4: the host ends go down with it, so the slaves lose carrier).
    pub(super) fn on_master_link(&mut self, key: NsKey, l: &Link) {
        let k = PortKey {
            ns: key,
            master_index: l.index,
        };
        if !self.ports.contains(k) {
            return;
        }
        let ids: Vec<SlaveId> = self.ports[k].slaves.keys().copied().collect();
        let p = &mut self.ports[k];
        if !l.name.is_empty() && p.master_name != l.name {
            p.master_name = l.name.clone();
            if let Some(w) = self.watched.get_mut(&key) {
                p.datapath.master_renamed(&mut w.at(), &l.name);
            }
        }
        if let Some(mac) = l.mac.map(MacAddr)
            && mac != p.port.master_mac()
        {
            p.port.set_master_mac(mac);
            let change = LinkChange {
                mac: Some(mac.0),
                ..Default::default()
            };
            for &id in &ids {
                self.change_slave(k, id, &change, "following the master's MAC");
            }
        }
        let p = &mut self.ports[k];
        if l.mtu != 0 && l.mtu != p.master_mtu {
            p.master_mtu = l.mtu;
            let change = LinkChange {
                mtu: Some(l.mtu),
                ..Default::default()
            };
            for &id in &ids {
                self.change_slave(k, id, &change, "following the master's MTU");
            }
        }
        let p = &mut self.ports[k];
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
            if !running {
                let ends = p.slaves.values().map(|s| s.host_index).collect();
                p.datapath.host_ends_went_down(&ends);
            }
            self.notify(if running {
                Notice::MasterUp { master }
            } else {
                Notice::MasterDown { master }
            });
        }
    }

    /// The master left its namespace: deleted (its slaves go with it, spec §7.5) or
    /// moved (the port follows it: host ends, sockets, guard).
    pub(super) fn on_master_gone(&mut self, key: NsKey, l: &Link) {
        let k = PortKey {
            ns: key,
            master_index: l.index,
        };
        if !self.ports.contains(k) {
            return;
        }
        match (l.new_netnsid, l.new_ifindex) {
            (Some(nsid), Some(index)) => {
                if let Err(e) = self.follow_master(k, nsid, index) {
                    tracing::error!("following master {} to another namespace: {e}", l.name);
                }
            }
            _ => {
                tracing::info!("master {} deleted: removing its slaves", l.name);
                let ids: Vec<SlaveId> = self.ports[k].slaves.keys().copied().collect();
                for id in ids {
                    self.remove_slave(k, id, true);
                }
            }
        }
    }

    /// The port follows its master, now `index` in the namespace of id `nsid`: its host
    /// ends are moved there, made what they must be, and the port gets a new datapath.
    fn follow_master(&mut self, k: PortKey, nsid: i32, index: u32) -> Result<(), Error> {
        self.leave_l3s(k);
        let old = k.ns;
        let new_ns = self.ns_of(old, Some(nsid)).ok_or(Error::NamespaceGone)?;
        let hosts: Vec<(SlaveId, u32, String)> = self.ports[k]
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
            let _ = nft::apply(&w.ns, &guard::teardown(k.master_index));
        }
        self.watch(&new_ns)?;
        let new = PortKey {
            ns: new_ns.key(),
            master_index: index,
        };
        self.ports.rekey(k, new);
        let wants: Vec<_> = hosts
            .iter()
            .map(|(id, _, _)| {
                let mut want = self.host_end_want(new, *id, true);
                // A move resets the device's IPv6 settings: no addresses, before it is up.
                want.ipv6_reset = true;
                want
            })
            .collect();
        let kind = self.ports[new].datapath.kind();
        let w = self.watched.get_mut(&new.ns).expect("just watched");
        let master = w
            .rtnl
            .link_by_index(index)?
            .ok_or_else(|| Error::Vanished("the moved master".into()))?;
        let master_sock =
            Arc::new(w.ns.run(|| PacketSocket::open_ring(index, kind.ring_slots(true, 0)))??);
        let raw = w.ns.run(|| RawSender::open(index, EGRESS_MARK))??;
        let mut found = Vec::new();
        for (n, ((id, _, name), want)) in hosts.iter().zip(&wants).enumerate() {
            let host = w
                .rtnl
                .link_by_name(name)?
                .ok_or_else(|| Error::Vanished(format!("host end {name}")))?;
            hostend::make_host_end(&mut w.rtnl, host.index, want)?;
            let sock =
                w.ns.run(|| PacketSocket::open_ring(host.index, kind.ring_slots(false, n)))??;
            found.push((*id, host.index, sock));
        }
        let p = &mut self.ports[new];
        // A new datapath: the old one's tables are gone with the old namespace's, its
        // programs moved away with the devices.
        let at_master = kernel::Master {
            index,
            name: master.name.clone(),
            sock: master_sock,
            raw: Some(raw),
        };
        p.datapath = Datapath::start(
            kind,
            self.fast_path,
            at_master,
            p.port.snapshot(),
            self.busy_poll,
        )?;
        p.master_name = master.name.clone();
        for (id, h, sock) in found {
            if let Some(rec) = p.slaves.get_mut(&id) {
                rec.host_index = h;
                rec.sock = Arc::new(sock);
                rec.loc = None;
            }
        }
        for (id, _, _) in &hosts {
            if self
                .ports
                .get(new)
                .is_some_and(|p| p.slaves.contains_key(id))
            {
                self.relocate(new, *id);
            }
        }
        if !self.ports.any_in(old) {
            self.unwatch(old);
        }
        tracing::info!(
            "port of {} followed its master to {}",
            master.name,
            new_ns.key()
        );
        if self.ports.contains(new) {
            self.sync_l3s(new)?;
            self.publish(new);
        }
        Ok(())
    }
}

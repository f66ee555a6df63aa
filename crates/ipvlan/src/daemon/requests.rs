//! What the CLI's requests do: add a slave (and its port), change a port, delete a
//! slave, list slaves.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use ipvlan_core::{MacAddr, SlaveId};
use ipvlan_datapath::SlaveCounters;
use ipvlan_datapath::kernel::ProgramDrops;
use ipvlan_proto::{self as proto, LinkFlag, Notice, PortArgs, SlaveView};
use ipvlan_sys::netns::named_namespaces;
use ipvlan_sys::packet::PacketSocket;
use ipvlan_sys::rtnl::{Link, LinkChange, LinkStats, Rtnl, VethSpec};
use ipvlan_sys::{NetNs, NsKey};

use super::control::Requests;
use super::hostend::{self, HOST_END_MTU};
use super::portmap::PortKey;
use super::{ALIAS_PREFIX, Daemon, Error, Loc, RtnlRef, Settings, SlaveRec, host_end_name};

impl Requests for Daemon {
    type Caller = NetNs;

    fn add(
        &mut self,
        caller: &NetNs,
        master: &str,
        name: &str,
        mtu: Option<u32>,
        conf: PortArgs,
    ) -> Result<(), Error> {
        crate::grammar::check_ifname(name)?;
        let (m, taken) = {
            let mut rt = self.rtnl_for(caller)?;
            let m = rt.get().link_by_name(master)?;
            let taken = rt.get().link_by_name(name)?.is_some();
            (m, taken)
        };
        let m = m.ok_or_else(|| Error::NoSuchDevice(master.to_string()))?;
        if taken {
            return Err(Error::NameInUse(name.to_string()));
        }
        // A slave as master: the new slave joins that slave's port (spec §1.3 step 2).
        if let Some((k, _)) = self.find_slave(caller, m.index)? {
            return self.add_to_port(k, caller, name, mtu, conf);
        }
        if m.alias
            .as_deref()
            .is_some_and(|a| a.starts_with(ALIAS_PREFIX))
        {
            return Err(Error::HostEndAsMaster(master.to_string()));
        }
        if m.is_loopback() {
            return Err(Error::LoopbackMaster(master.to_string()));
        }
        if !m.is_ether() || m.mac.is_none() {
            return Err(Error::NotEthernet {
                master: master.to_string(),
                arphrd: m.arphrd,
            });
        }
        if m.controller.is_some() {
            return Err(Error::MasterBusy(master.to_string()));
        }
        let k = PortKey {
            ns: caller.key(),
            master_index: m.index,
        };
        if !self.ports.contains(k) {
            self.new_port(caller, &m)?;
        } else if conf.host_access == Some(true)
            && let Some(ip) = self.host_clashes(k)
        {
            return Err(Error::HostAddrClash(ip));
        }
        let result = self.add_to_port(k, caller, name, mtu, conf);
        if result.is_err() && self.ports.get(k).is_some_and(|p| p.slaves.is_empty()) {
            self.destroy_port(k);
        }
        result
    }

    fn set(&mut self, caller: &NetNs, dev: &str, conf: PortArgs) -> Result<(), Error> {
        let (k, _) = self.resolve_dev(caller, dev)?;
        if conf.host_access == Some(true)
            && let Some(ip) = self.host_clashes(k)
        {
            return Err(Error::HostAddrClash(ip));
        }
        let port = &mut self.ports[k].port;
        let old = Settings::of(port);
        let changed = port.apply_changelink(conf.mode, conf.flags);
        if let Some(on) = conf.source_guard {
            port.set_source_guard(on);
        }
        if let Some(on) = conf.host_access {
            port.set_host_access(on);
        }
        if let Err(e) = self.sync_l3s(k) {
            old.restore(&mut self.ports[k].port);
            return Err(e);
        }
        if changed {
            self.apply_noarp(k);
        }
        self.publish(k);
        self.notify_mode(k, old);
        Ok(())
    }

    fn del(&mut self, caller: &NetNs, dev: &str) -> Result<(), Error> {
        let (k, id) = self.resolve_dev(caller, dev)?;
        self.remove_slave(k, id, true);
        Ok(())
    }

    fn show(&mut self, caller: &NetNs, dev: Option<&str>) -> Result<Vec<SlaveView>, Error> {
        let only = match dev {
            Some(d) => Some(self.resolve_dev(caller, d)?),
            None => None,
        };
        // A slave's view lists what its port switches (the CNI plugin waits for its
        // addresses there): the port's held-back changes are applied first.
        if let Some((k, _)) = only
            && let Some(w) = self.watched.get_mut(&k.ns)
        {
            self.ports[k]
                .datapath
                .tick(&mut w.at(), std::time::Instant::now(), true);
        }
        Ok(self.views(only))
    }
}

impl Daemon {
    /// A request socket in `ns`: the watched one, or a fresh one.
    fn rtnl_for(&mut self, ns: &NetNs) -> std::io::Result<RtnlRef<'_>> {
        if self.watched.contains_key(&ns.key()) {
            Ok(RtnlRef::Watched(
                &mut self.watched.get_mut(&ns.key()).expect("checked").rtnl,
            ))
        } else {
            Ok(RtnlRef::Own(Rtnl::in_ns(ns)?))
        }
    }

    /// Creates slave `name` in the caller's namespace, its host end beside the master.
    fn add_to_port(
        &mut self,
        k: PortKey,
        caller: &NetNs,
        name: &str,
        mtu: Option<u32>,
        conf: PortArgs,
    ) -> Result<(), Error> {
        let id = self.ports[k].port.add_slave().map_err(Error::PortFull)?;
        let p = &self.ports[k];
        let master_name = p.master_name.clone();
        let spec_mac = p.port.master_mac();
        let spec_mtu = mtu.unwrap_or(p.master_mtu);
        let host_name = host_end_name(k.master_index, id.0);
        let here = caller.key() == k.ns;
        let port_kind = p.datapath.kind();
        let slaves_before = p.slaves.len();
        let mut want = self.host_end_want(k, id, true);
        want.mark.slave = name.to_string();
        want.ipv6_reset = true;
        let w = self
            .watched
            .get_mut(&k.ns)
            .expect("port namespace is watched");
        // Elsewhere (a nested slave): created in the caller's namespace, peer sent home.
        let mut own = if here {
            None
        } else {
            Some(Rtnl::in_ns(caller)?)
        };
        let nsid = if here { None } else { w.rtnl.nsid_of(caller)? };
        let spec = VethSpec {
            name,
            mac: spec_mac.0,
            mtu: spec_mtu,
            peer_name: &host_name,
            peer_mtu: HOST_END_MTU,
            peer_netns_fd: (!here).then(|| w.ns.as_raw_fd()),
        };
        let created = match own.as_mut() {
            Some(rt) => rt.create_veth(&spec),
            None => w.rtnl.create_veth(&spec),
        };
        if let Err(e) = created {
            self.ports[k].port.remove_slave(id);
            return Err(e.into());
        }
        let made = (|| -> Result<(Link, Link, PacketSocket), Error> {
            let host = w
                .rtnl
                .link_by_name(&host_name)?
                .ok_or_else(|| Error::Vanished("the new host end".into()))?;
            let slave_rt = own.as_mut().unwrap_or(&mut w.rtnl);
            let slave = slave_rt
                .link_by_name(name)?
                .ok_or_else(|| Error::Vanished("the new slave".into()))?;
            // The kernel would derive the link-local from the dev_id; the daemon adds
            // that address itself when the slave comes up (see `ensure_link_local`).
            // Below IPV6_MIN_MTU there is no IPv6 to set (`on_link` sets it once
            // the MTU allows IPv6).
            match slave_rt.set_link(
                slave.index,
                &LinkChange {
                    ipv6_autoconf: Some(false),
                    ..Default::default()
                },
            ) {
                Err(e) if e.errno() == Some(nix::errno::Errno::EAFNOSUPPORT as i32) => {}
                r => r?,
            }
            hostend::make_host_end(&mut w.rtnl, host.index, &want)?;
            let sock = w.ns.run(|| {
                PacketSocket::open_ring(host.index, port_kind.ring_slots(false, slaves_before))
            })??;
            sock.set_filter(port_kind.filters(want.mark.mode).1)?;
            Ok((host, slave, sock))
        })();
        let (host, slave, sock) = match made {
            Ok(v) => v,
            Err(e) => {
                if let Ok(Some(h)) = w.rtnl.link_by_name(&host_name) {
                    let _ = w.rtnl.del_link(h.index);
                }
                self.ports[k].port.remove_slave(id);
                return Err(e);
            }
        };
        let p = &mut self.ports[k];
        p.slaves.insert(
            id,
            SlaveRec {
                host_index: host.index,
                host_name,
                sock: Arc::new(sock),
                counters: Arc::new(SlaveCounters::default()),
                loc: Some(Loc {
                    nsid,
                    index: slave.index,
                }),
                name: name.to_string(),
                flags: slave.flags,
                mtu: slave.mtu,
            },
        );
        let old = Settings::of(&p.port);
        let mode_changed = p.port.apply_newlink(conf.mode, conf.flags);
        if let Some(on) = conf.source_guard {
            p.port.set_source_guard(on);
        }
        if let Some(on) = conf.host_access {
            p.port.set_host_access(on);
        }
        if let Err(e) = self.sync_l3s(k) {
            // As the kernel does when the L3S hooks cannot be registered: the new
            // slave is torn down and the port keeps its mode.
            old.restore(&mut self.ports[k].port);
            self.remove_slave(k, id, true);
            return Err(e);
        }
        if mode_changed {
            self.apply_noarp(k);
        } else {
            self.set_noarp(k, id);
        }
        self.publish(k);
        self.notify(Notice::SlaveAdded {
            slave: name.to_string(),
            master: master_name,
            dev_id: id.0,
        });
        self.notify_mode(k, old);
        Ok(())
    }

    /// The port and slave that `index` in namespace `ns` is, if it is one of ours.
    fn find_slave(&mut self, ns: &NetNs, index: u32) -> Result<Option<(PortKey, SlaveId)>, Error> {
        for k in self.ports.keys() {
            let nsid = if k.ns == ns.key() {
                None
            } else {
                let w = self
                    .watched
                    .get_mut(&k.ns)
                    .expect("port namespace is watched");
                match w.rtnl.nsid_of(ns)? {
                    Some(id) => Some(id),
                    None => continue,
                }
            };
            let want = Some(Loc { nsid, index });
            if let Some((&id, _)) = self.ports[k].slaves.iter().find(|(_, s)| s.loc == want) {
                return Ok(Some((k, id)));
            }
        }
        Ok(None)
    }

    fn resolve_dev(&mut self, caller: &NetNs, dev: &str) -> Result<(PortKey, SlaveId), Error> {
        let link = self
            .rtnl_for(caller)?
            .get()
            .link_by_name(dev)?
            .ok_or_else(|| Error::NoSuchDevice(dev.to_string()))?;
        self.find_slave(caller, link.index)?
            .ok_or_else(|| Error::NotOurs(dev.to_string()))
    }

    /// Every slave, as `link show` reports it.
    pub(super) fn show_all(&mut self) -> Vec<SlaveView> {
        self.views(None)
    }

    pub(super) fn views(&mut self, only: Option<(PortKey, SlaveId)>) -> Vec<SlaveView> {
        let names = named_namespaces();
        let ns_name = |k: NsKey| names.iter().find(|(_, n)| *n == k).map(|(s, _)| s.clone());
        let mut out = Vec::new();
        for k in self.ports.keys() {
            let ids: Vec<SlaveId> = self.ports[k].slaves.keys().copied().collect();
            let (host_stats, private) = self.port_counters(k);
            for id in ids {
                if only.is_some_and(|o| o != (k, id)) {
                    continue;
                }
                let (key, link) = match self.slave_link(k, id) {
                    Some((k, l)) => (Some(k), l),
                    None => (None, None),
                };
                let p = &self.ports[k];
                let rec = &p.slaves[&id];
                let state = p.port.slave(id);
                let link = link.unwrap_or_else(|| Link {
                    name: rec.name.clone(),
                    flags: rec.flags,
                    ..Default::default()
                });
                out.push(SlaveView {
                    ifindex: link.index,
                    ifname: link.name.clone(),
                    flags: LinkFlag::of_slave(link.flags),
                    mtu: link.mtu,
                    operstate: link.operstate.to_string(),
                    address: link.mac.map(MacAddr),
                    netns: key.and_then(ns_name),
                    netns_id: key.map(|k| k.to_string()),
                    master: p.master_name.clone(),
                    master_netns: ns_name(k.ns),
                    mode: p.port.mode(),
                    port_flags: p.port.flags(),
                    source_guard: p.port.source_guard(),
                    host_access: p.port.host_access(),
                    dev_id: id.0,
                    host_end: rec.host_name.clone(),
                    addrs: state
                        .map(|s| {
                            // Sorted, so that the listing does not depend on event order.
                            let mut a = s.addrs.clone();
                            a.sort();
                            a
                        })
                        .unwrap_or_default(),
                    counters: {
                        let mut c = rec.counters.read();
                        // The slave end's own statistics, as `ip -s` shows them in its
                        // namespace: the fast path hands frames straight to it, past
                        // its host end. Else: what the host end received its slave
                        // sent, and the reverse.
                        if let Some(s) = &link.stats {
                            c.tx_packets = s.tx_packets;
                            c.tx_bytes = s.tx_bytes;
                            c.rx_packets = s.rx_packets;
                            c.rx_bytes = s.rx_bytes;
                        } else if let Some(h) = host_stats.get(&rec.host_index) {
                            c.tx_packets = h.rx_packets;
                            c.tx_bytes = h.rx_bytes;
                            c.rx_packets = h.tx_packets;
                            c.rx_bytes = h.tx_bytes;
                        }
                        for &(_, why, n) in private.iter().filter(|(s, _, n)| *s == id && *n > 0) {
                            c.add_drops(why, n);
                        }
                        c
                    },
                    backend: match self.ports[k].datapath.kind() {
                        ipvlan_datapath::Backend::Kernel => proto::Backend::Kernel,
                        ipvlan_datapath::Backend::User => proto::Backend::User,
                    },
                    fast_path: self.ports[k].datapath.fast_path_active(),
                });
            }
        }
        out
    }

    /// A port's host-end statistics by ifindex, and (kernel backend) the frames the
    /// program dropped per slave and reason (`private`, `spoof`, `source_guard`).
    fn port_counters(&mut self, k: PortKey) -> (HashMap<u32, LinkStats>, Vec<ProgramDrops>) {
        let p = &self.ports[k];
        let Some(w) = self.watched.get_mut(&k.ns) else {
            return Default::default();
        };
        let stats = w
            .rtnl
            .links()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|l| l.stats.map(|s| (l.index, s)))
            .collect();
        (stats, p.datapath.program_drops(&w.ns))
    }
}

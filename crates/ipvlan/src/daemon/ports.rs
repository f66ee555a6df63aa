//! A port's life: made for a master, its state published to its datapath and written
//! on its host ends, slaves removed, and the port removed with its last slave.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipvlan_core::{MacAddr, Port, SlaveId};
use ipvlan_datapath::EGRESS_MARK;
use ipvlan_datapath::kernel::{self, Datapath, HostEnd, L3sQueue, PortInput};
use ipvlan_proto::Notice;
use ipvlan_sys::NetNs;
use ipvlan_sys::packet::PacketSocket;
use ipvlan_sys::raw::RawSender;
use ipvlan_sys::rtnl::{IFF_LOWER_UP, IFF_UP, Link, LinkChange};

use super::portmap::PortKey;
use super::{Daemon, Error, PortRec, Settings, close_later};

impl Daemon {
    /// Makes the port of master `m` in `ns` (its datapath started, no slaves yet).
    pub(super) fn new_port(&mut self, ns: &NetNs, m: &Link) -> Result<PortKey, Error> {
        self.watch(ns)?;
        let w = &self.watched[&ns.key()];
        let kind = self.backend;
        let master_sock =
            Arc::new(w.ns.run(|| PacketSocket::open_ring(m.index, kind.ring_slots(true, 0)))??);
        let raw = w.ns.run(|| RawSender::open(m.index, EGRESS_MARK))??;
        let port = Port::new(MacAddr(m.mac.expect("checked by the caller")));
        let master = kernel::Master {
            index: m.index,
            name: m.name.clone(),
            sock: master_sock,
            raw: Some(raw),
        };
        let datapath = Datapath::start(
            kind,
            self.fast_path,
            master,
            port.snapshot(),
            self.busy_poll,
        )?;
        let key = PortKey {
            ns: ns.key(),
            master_index: m.index,
        };
        self.ports.insert(
            key,
            PortRec {
                master_name: m.name.clone(),
                port,
                slaves: BTreeMap::new(),
                datapath,
                marked: None,
                master_running: m.flags & (IFF_UP | IFF_LOWER_UP) == IFF_UP | IFF_LOWER_UP,
                l3s: None,
                master_mtu: m.mtu,
            },
        );
        Ok(key)
    }

    pub(super) fn destroy_port(&mut self, k: PortKey) {
        self.leave_l3s(k);
        let Some(p) = self.ports.remove(k) else {
            return;
        };
        if let Some(w) = self.watched.get_mut(&k.ns) {
            p.datapath.remove(&mut w.at());
        }
        if !self.ports.any_in(k.ns) {
            self.unwatch(k.ns);
        }
    }

    /// Forgets a slave; with `delete`, removes its veth pair too. The port goes with
    /// its last slave.
    pub(super) fn remove_slave(&mut self, k: PortKey, id: SlaveId, delete: bool) {
        let Some(p) = self.ports.get_mut(k) else {
            return;
        };
        let Some(rec) = p.slaves.remove(&id) else {
            return;
        };
        p.port.remove_slave(id);
        if delete && let Some(w) = self.watched.get_mut(&k.ns) {
            match w.rtnl.del_link(rec.host_index) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(nix::errno::Errno::ENODEV as i32) => {}
                Err(e) => tracing::warn!("deleting {}: {e}", rec.host_name),
            }
        }
        let master = p.master_name.clone();
        let empty = p.slaves.is_empty();
        self.notify(Notice::SlaveRemoved {
            slave: rec.name,
            master,
            dev_id: id.0,
        });
        if empty {
            self.destroy_port(k);
        } else {
            self.publish(k);
        }
        // Closing a bound packet socket waits for an RCU grace period (about 10 ms):
        // not on the way to the answer.
        close_later(rec.sock);
    }

    /// Tells every `ipvlan monitor` (and the log) about a change.
    pub(super) fn notify(&mut self, n: Notice) {
        self.control.notify(&n);
    }

    /// Tells of the port's new mode, flags or guard, if they are not `old` any more.
    pub(super) fn notify_mode(&mut self, k: PortKey, old: Settings) {
        let p = &self.ports[k];
        let now = Settings::of(&p.port);
        if now != old {
            let master = p.master_name.clone();
            self.notify(Notice::ModeChanged {
                master,
                mode: now.mode,
                flags: now.flags,
                source_guard: now.source_guard,
                host_access: now.host_access,
            });
        }
    }

    /// Hands the port's new state to its datapath, after writing it on the host ends.
    pub(super) fn publish(&mut self, k: PortKey) {
        self.mark_host_ends(k);
        let Some(p) = self.ports.get_mut(k) else {
            return;
        };
        let Some(w) = self.watched.get_mut(&k.ns) else {
            return;
        };
        let ends = p
            .slaves
            .iter()
            .map(|(&id, r)| HostEnd {
                id,
                index: r.host_index,
                name: r.host_name.clone(),
                sock: r.sock.clone(),
                counters: r.counters.clone(),
                away: r.loc.is_some_and(|l| l.nsid.is_some()),
            })
            .collect();
        let l3s = p.l3s.as_ref().map(|l| L3sQueue {
            num: l.num,
            queue: l.queue.clone(),
        });
        let input = PortInput {
            snap: p.port.snapshot(),
            ends,
            l3s,
        };
        p.datapath.apply(&mut w.at(), input);
    }

    /// The port's state lives on its devices, for the next daemon (see `adopt`).
    fn mark_host_ends(&mut self, k: PortKey) {
        let Some(p) = self.ports.get(k) else {
            return;
        };
        let settings = Settings::of(&p.port);
        if p.marked == Some(settings) {
            return;
        }
        let ends: Vec<(u32, String)> = p
            .slaves
            .iter()
            .map(|(&id, r)| {
                let want = self.host_end_want(k, id, false);
                (r.host_index, want.mark.alias(&want.master_name))
            })
            .collect();
        let Some(w) = self.watched.get_mut(&k.ns) else {
            return;
        };
        let mut ok = true;
        for (index, alias) in ends {
            let change = LinkChange {
                alias: Some(alias),
                ..Default::default()
            };
            ok &= w.rtnl.set_link(index, &change).is_ok();
        }
        if ok {
            self.ports[k].marked = Some(settings);
        }
    }
}

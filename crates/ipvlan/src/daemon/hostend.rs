//! Host ends tampered with from outside, and repaired.
//!
//! A host end is the daemon's: up while its master runs, MTU [`HOST_END_MTU`], NOARP,
//! no controller, no addresses, and the alias that marks it as ours ([`Mark`]). Someone
//! in the master's namespace can change any of that with plain `ip` (set it down, lower
//! its MTU, clear its alias, make it a bridge port, give it an address or turn its
//! IPv6 address generation back on); each link or address event on a host end reads
//! the device again and puts back what differs, and the log says what was repaired. Renaming it is not repaired (a veth must be down to
//! be renamed; setting it up again is).

use super::*;

/// A host end carries whatever its slave sends (the driver has no TX MTU check).
pub(super) const HOST_END_MTU: u32 = 65535;

impl Daemon {
    /// The port and slave whose host end has `index` in namespace `key`.
    pub(super) fn find_host_end(&self, key: NsKey, index: u32) -> Option<(usize, SlaveId)> {
        self.slave_where(key, |s| s.host_index == index)
    }

    /// Reads a host end again and repairs what was changed from outside.
    pub(super) fn check_host_end(&mut self, key: NsKey, index: u32) {
        let Some((pi, id)) = self.find_host_end(key, index) else {
            return;
        };
        let p = &self.ports[pi];
        let running = p.master_running;
        let master = p.master_name.clone();
        let rec = &p.slaves[&id];
        let host_name = rec.host_name.clone();
        let want = Mark {
            owner: self.owner.clone(),
            slave: rec.name.clone(),
            master_index: p.master_index,
            dev_id: id,
            mode: p.port.mode(),
            flags: p.port.flags(),
            source_guard: p.port.source_guard(),
        };
        let slave = want.slave.clone();
        let Some(w) = self.watched.get_mut(&key) else {
            return;
        };
        let Ok(Some(l)) = w.rtnl.link_by_index(index) else {
            return;
        };
        let mut change = LinkChange::default();
        let mut what = Vec::new();
        if running && !l.is_up() {
            change.flags_set |= IFF_UP;
            what.push("set down".to_string());
        }
        if l.flags & IFF_NOARP == 0 {
            change.flags_set |= IFF_NOARP;
            what.push("ARP turned on".to_string());
        }
        if l.mtu != HOST_END_MTU {
            change.mtu = Some(HOST_END_MTU);
            what.push(format!("MTU {}", l.mtu));
        }
        // The slave's name may have changed since (renamed in its namespace).
        let ours = l.alias.as_deref().and_then(Mark::parse).is_some_and(|m| {
            Mark {
                slave: want.slave.clone(),
                ..m
            } == want
        });
        if !ours {
            change.alias = Some(want.alias(&master));
            what.push(format!("alias {:?}", l.alias.as_deref().unwrap_or("")));
        }
        if let Some(c) = l.controller.filter(|&c| c != 0) {
            change.controller = Some(0);
            what.push(format!("made a port of ifindex {c}"));
        }
        if what.is_empty() {
            return;
        }
        // Detached first: a bridge port's flags and MTU are the bridge's business.
        let detach = LinkChange {
            controller: change.controller.take(),
            ..Default::default()
        };
        let res = if detach.controller.is_some() {
            w.rtnl.set_link(index, &detach)
        } else {
            Ok(())
        };
        let res = res.and_then(|()| w.rtnl.set_link(index, &change));
        let what = what.join(", ");
        match res {
            Ok(()) => tracing::warn!(
                "host end {host_name} of {slave} was changed from outside ({what}); repaired it"
            ),
            Err(e) => tracing::error!(
                "host end {host_name} of {slave} was changed from outside ({what}); cannot repair it: {e}"
            ),
        }
    }

    /// An address given to a host end is removed again: host ends have none.
    pub(super) fn strip_host_end_addr(&mut self, key: NsKey, a: &Addr) {
        let Some((pi, id)) = self.find_host_end(key, a.index) else {
            return;
        };
        let rec = &self.ports[pi].slaves[&id];
        let (slave, host_name) = (rec.name.clone(), rec.host_name.clone());
        let Some(w) = self.watched.get_mut(&key) else {
            return;
        };
        if a.ip.is_ipv6() {
            // A generated link-local comes back unless generation stays off.
            let off = LinkChange {
                ipv6_autoconf: Some(false),
                ..Default::default()
            };
            let _ = w.rtnl.set_link(a.index, &off);
        }
        match w.rtnl.del_addr(a) {
            Ok(()) => tracing::warn!(
                "host end {host_name} of {slave} got the address {} from outside; removed it",
                a.ip
            ),
            Err(e) if e.errno() == Some(nix::errno::Errno::EADDRNOTAVAIL as i32) => {}
            Err(e) => tracing::error!(
                "host end {host_name} of {slave} got the address {} from outside; cannot remove it: {e}",
                a.ip
            ),
        }
    }
}

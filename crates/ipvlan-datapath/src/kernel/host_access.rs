//! Host access (`PortSnapshot::host_access`, an ipvlan-rs extension): what the master's
//! namespace needs so that it and the port's slaves reach each other, kept in step
//! with the port by both backends. The frames themselves are the programs' (the
//! nftables program lets the host end's stack have what a slave sends to the
//! namespace's own addresses; see `ipvlan_core::compile::host_access_rules`); this
//! module owns the namespace's side:
//!
//! * each host end answers ARP and, in L2 and L3, carries the master's MAC: the
//!   slave's frames for the namespace arrive there as `PACKET_HOST`, and L2 slaves
//!   resolve its addresses (in L3S it keeps a MAC of its own: the routed L3S egress
//!   relies on it, see `super::l3s`; its previous MAC is put back);
//! * per slave address (link-locals aside), a host route `ADDR dev HOST_END proto 250`
//!   and a permanent neighbour `ADDR lladdr MASTER_MAC dev HOST_END proto 250` (in
//!   routed L3S the L3S routing's own, the same entry): the namespace sends to a slave
//!   straight through its host end, and the route satisfies `rp_filter` for what comes
//!   back;
//! * in L2, per IPv6 address of the namespace (link-locals aside), a proxy entry on
//!   each host end (`ip -6 neigh add proxy ADDR dev HOST_END proto 250`, with
//!   `proxy_ndp` and per-device `forwarding` on), so the namespace answers an L2
//!   slave's neighbour solicitations; IPv4 needs nothing (the stack answers ARP for
//!   every address of the namespace).
//!
//! Everything it adds carries protocol 250 (`ipvlan_sys::rtnl::PROTO_IPVLAN`), by which a new daemon
//! finds what an earlier one left, and goes when the switch goes off, the slave or its
//! address goes, or the port is removed. It never touches any other route,
//! neighbour or address. When the switch goes off the host ends get their MAC back
//! (one made up from the ifindex where a restarted daemon does not know it) and ARP
//! goes off again; the IPv6 `forwarding`/`proxy_ndp` of a host end stay.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipvlan_core::{Mode, PortSnapshot};
use ipvlan_sys::NetNs;
use ipvlan_sys::rtnl::{IFF_NOARP, LinkChange, OwnEntry, OwnKind, Rtnl};

use super::HostEnd;

/// One entry of ours: its kind and what it is for.
type Entry = (OwnKind, OwnEntry);

/// A port's host access in its master's namespace.
#[derive(Default)]
pub(super) struct HostAccess {
    /// The entries of ours there now.
    entries: BTreeSet<Entry>,
    /// What was left by an earlier daemon was read.
    adopted: bool,
    /// Host ends set up for host access, by ifindex: the master's MAC where they
    /// carry it.
    ends: BTreeMap<u32, Option<[u8; 6]>>,
    /// What host ends carried before the master's MAC.
    own_macs: BTreeMap<u32, [u8; 6]>,
    /// The namespace's IPv6 addresses (L2 proxies), read on address events.
    local6: BTreeSet<IpAddr>,
}

fn link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6.is_loopback(),
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

impl HostAccess {
    /// Makes the host ends what host access needs, or what they are without it: before
    /// [`Self::sync`], and before the L3S routing adds its neighbour entries (a MAC
    /// change flushes a device's neighbours). Returns the host ends whose neighbour
    /// entries the kernel flushed on the way (a new MAC, ARP switched on or off), so the
    /// L3S routing puts its own back.
    pub fn sync_ends(
        &mut self,
        ns: &NetNs,
        rtnl: &mut Rtnl,
        snap: &PortSnapshot,
        ends: &[HostEnd],
    ) -> std::io::Result<BTreeSet<u32>> {
        let mac = snap.master_mac.0;
        // In L3S a host end must not carry the master's MAC: what the slave sends is
        // `PACKET_HOST` there only when the fast path makes it so.
        let wear = (snap.mode != Mode::L3s).then_some(mac);
        let state = snap.host_access.then_some(wear);
        let mut flushed = BTreeSet::new();
        for end in ends {
            if self.ends.get(&end.index).copied() != state
                && self.set_up(ns, rtnl, end, state, mac)?
            {
                flushed.insert(end.index);
            }
        }
        let indices: BTreeSet<u32> = ends.iter().map(|e| e.index).collect();
        self.ends.retain(|i, _| indices.contains(i));
        Ok(flushed)
    }

    /// Brings the routes, neighbour and proxy entries in line with `snap` and its host
    /// ends `ends` (set up by [`Self::sync_ends`]). With `l3s_routed`, the port's L3S routing (`super::l3s`) holds the slaves'
    /// neighbour entries (the same ones): they are its, not ours.
    pub fn sync(
        &mut self,
        rtnl: &mut Rtnl,
        snap: &PortSnapshot,
        ends: &[HostEnd],
        l3s_routed: bool,
    ) -> std::io::Result<()> {
        let on = snap.host_access;
        let indices: BTreeSet<u32> = ends.iter().map(|e| e.index).collect();
        if !self.adopted {
            // Ours on this port's host ends, from an earlier daemon.
            for (kind, e) in rtnl.own_entries().map_err(std::io::Error::other)? {
                if indices.contains(&e.index) {
                    self.entries.insert((kind, e));
                }
            }
            self.adopted = true;
        }
        if on && snap.mode == Mode::L2 && self.local6.is_empty() {
            self.read_local6(rtnl)?;
        }
        let mac = snap.master_mac.0;
        let by_id: BTreeMap<_, _> = ends.iter().map(|e| (e.id, e)).collect();
        let mut want = BTreeSet::new();
        if on {
            for (ip, id) in snap.table.iter() {
                let Some(end) = by_id.get(&id) else { continue };
                if link_local(&ip) {
                    continue;
                }
                let e = OwnEntry {
                    ip,
                    index: end.index,
                };
                want.insert((OwnKind::Route, e));
                if !l3s_routed {
                    want.insert((OwnKind::Neighbour(mac), e));
                }
            }
            if snap.mode == Mode::L2 {
                for end in ends {
                    for ip in &self.local6 {
                        let e = OwnEntry {
                            ip: *ip,
                            index: end.index,
                        };
                        want.insert((OwnKind::Proxy, e));
                    }
                }
            }
        }
        if l3s_routed {
            // Handed over as they are: removing one would remove the L3S routing's.
            self.entries
                .retain(|(k, _)| !matches!(k, OwnKind::Neighbour(_)));
        }

        let stale: Vec<Entry> = self.entries.difference(&want).copied().collect();
        for (kind, e) in stale {
            rtnl.set_own_entry(kind, e, false)
                .map_err(std::io::Error::other)?;
            self.entries.remove(&(kind, e));
        }
        let new: Vec<Entry> = want.difference(&self.entries).copied().collect();
        for (kind, e) in new {
            let added = rtnl
                .set_own_entry(kind, e, true)
                .map_err(std::io::Error::other)?;
            if !added {
                // Someone's own route to the address: theirs stays, and wins.
                tracing::warn!(
                    "a route to {} is there already: host access to it goes its way",
                    e.ip
                );
            }
            // (Removing it later removes ours only: a route's removal names protocol 250.)
            self.entries.insert((kind, e));
        }
        Ok(())
    }

    /// Makes host end `end` what host access needs (`state`: `Some(Some(MAC))` ARP on
    /// and carrying the master's MAC, `Some(None)` ARP on only) or what it is without
    /// (`None`: NOARP, and not the master's MAC `master`). True when that flushed the
    /// device's neighbour entries (the kernel does on a new MAC or a NOARP change).
    fn set_up(
        &mut self,
        ns: &NetNs,
        rtnl: &mut Rtnl,
        end: &HostEnd,
        state: Option<Option<[u8; 6]>>,
        master: [u8; 6],
    ) -> std::io::Result<bool> {
        let Some(link) = rtnl
            .link_by_index(end.index)
            .map_err(std::io::Error::other)?
        else {
            return Ok(false);
        };
        let mut change = LinkChange::default();
        let noarp = link.flags & IFF_NOARP != 0;
        match state {
            Some(_) if noarp => change.flags_clear = IFF_NOARP,
            None if !noarp => change.flags_set = IFF_NOARP,
            _ => {}
        }
        match (state.flatten(), link.mac) {
            (Some(m), now) if now != Some(m) => {
                if let Some(now) = now {
                    self.own_macs.entry(end.index).or_insert(now);
                }
                change.mac = Some(m);
            }
            (None, Some(now)) if now == master => {
                change.mac = Some(
                    self.own_macs
                        .remove(&end.index)
                        .unwrap_or_else(|| made_up_mac(end.index)),
                );
            }
            _ => {}
        }
        let flushes = change.flags_set != 0 || change.flags_clear != 0 || change.mac.is_some();
        if flushes {
            rtnl.set_link(end.index, &change)
                .map_err(std::io::Error::other)?;
            self.entries
                .retain(|(k, e)| e.index != end.index || !matches!(k, OwnKind::Neighbour(_)));
        }
        match state {
            Some(wear) => {
                let name = end.name.clone();
                ns.run(move || ipv6_proxy_sysctls(&name))??;
                self.ends.insert(end.index, wear);
            }
            None => {
                self.ends.remove(&end.index);
            }
        }
        Ok(flushes)
    }

    /// An address of the master's namespace came or went: the proxies follow (L2).
    /// `sync` must follow to apply them.
    pub fn read_local6(&mut self, rtnl: &mut Rtnl) -> std::io::Result<()> {
        self.local6 = rtnl
            .addrs()
            .map_err(std::io::Error::other)?
            .into_iter()
            .map(|a| a.ip)
            .filter(|ip| ip.is_ipv6() && !link_local(ip))
            .collect();
        Ok(())
    }

    /// Removes everything of ours (the port is going).
    /// Host ends `indices` went down: the kernel dropped their routes, neighbour and
    /// proxy entries, ours among them; the next [`Self::sync`] makes them again.
    pub fn host_ends_went_down(&mut self, indices: &BTreeSet<u32>) {
        self.entries.retain(|(_, e)| !indices.contains(&e.index));
    }

    pub fn remove(self, rtnl: &mut Rtnl) {
        for (kind, e) in self.entries {
            let _ = rtnl.set_own_entry(kind, e, false);
        }
        for index in self.ends.keys() {
            let change = LinkChange {
                flags_set: IFF_NOARP,
                ..Default::default()
            };
            let _ = rtnl.set_link(*index, &change);
        }
    }
}

/// A host end's MAC, when the one it had before it carried the master's is not known (a
/// daemon restarted): locally administered, from its ifindex.
fn made_up_mac(index: u32) -> [u8; 6] {
    let [_, a, b, c] = index.to_be_bytes();
    [0x0a, 0x1a, 0x5b, a, b, c]
}

/// A host end answers neighbour solicitations for the namespace's addresses it holds
/// proxy entries for: only with `proxy_ndp` and the device's `forwarding` on, at once
/// with no `proxy_delay`. Runs in the master's namespace (its `/proc/sys/net`).
fn ipv6_proxy_sysctls(dev: &str) -> std::io::Result<()> {
    for (path, value) in [
        (format!("/proc/sys/net/ipv6/conf/{dev}/forwarding"), "1"),
        (format!("/proc/sys/net/ipv6/conf/{dev}/proxy_ndp"), "1"),
        (format!("/proc/sys/net/ipv6/neigh/{dev}/proxy_delay"), "0"),
    ] {
        std::fs::write(&path, value)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
    }
    Ok(())
}

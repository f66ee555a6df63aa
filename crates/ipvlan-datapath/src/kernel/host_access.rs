//! Host access (`PortSnapshot::host_access`, an ipvlan-rs extension): what the master's
//! namespace needs so that it and the port's slaves reach each other, kept in step
//! with the port by both backends. The frames themselves are the programs' (the
//! nftables program lets the host end's stack have what a slave sends to the
//! namespace's own addresses; see `ipvlan_core::compile::host_access_rules`); this
//! module owns the namespace's side:
//!
//! * each host end carries the master's MAC and answers ARP: the slave's frames for
//!   the namespace arrive there as `PACKET_HOST`, and L2 slaves resolve its addresses;
//! * per slave address (link-locals aside), a host route `ADDR dev HOST_END proto 250`
//!   and a permanent neighbour `ADDR lladdr MASTER_MAC dev HOST_END proto 250`: the
//!   namespace sends to a slave straight through its host end, and the route satisfies
//!   `rp_filter` for what comes back;
//! * in L2, per IPv6 address of the namespace (link-locals aside), a proxy entry on
//!   each host end (`ip -6 neigh add proxy ADDR dev HOST_END proto 250`, with
//!   `proxy_ndp` and per-device `forwarding` on), so the namespace answers an L2
//!   slave's neighbour solicitations; IPv4 needs nothing (the stack answers ARP for
//!   every address of the namespace).
//!
//! Everything it adds carries protocol 250 (`ipvlan_sys::rtnl::PROTO_IPVLAN`), by which a new daemon
//! finds what an earlier one left, and goes when the switch goes off, the slave or its
//! address goes, or the port is removed. It never touches any other route,
//! neighbour or address. The host end's MAC stays the master's when the switch goes
//! off (nothing reads it then); ARP goes off again.

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
    /// Host ends set up for host access, by ifindex: the MAC they were given.
    ends: BTreeMap<u32, [u8; 6]>,
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
    /// Brings the namespace in line with `snap` and its host ends `ends`; without `ns`
    /// (the master's namespace), the host ends are taken as they were set up before.
    pub fn sync(
        &mut self,
        ns: Option<&NetNs>,
        rtnl: &mut Rtnl,
        snap: &PortSnapshot,
        ends: &[HostEnd],
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
                want.insert((OwnKind::Neighbour(mac), e));
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

        // The host ends first: no route may lead to a host end that is not ready.
        for end in ends.iter().filter(|_| ns.is_some()) {
            if let Some(ns) = ns
                && on
                && self.ends.get(&end.index) != Some(&mac)
            {
                let Some(link) = rtnl
                    .link_by_index(end.index)
                    .map_err(std::io::Error::other)?
                else {
                    continue;
                };
                // A new MAC (even the same one) flushes the device's neighbours.
                let new_mac = link.mac != Some(mac);
                let change = LinkChange {
                    flags_clear: IFF_NOARP,
                    mac: new_mac.then_some(mac),
                    ..Default::default()
                };
                if new_mac || link.flags & IFF_NOARP != 0 {
                    rtnl.set_link(end.index, &change)
                        .map_err(std::io::Error::other)?;
                }
                if new_mac {
                    self.entries.retain(|(k, e)| {
                        e.index != end.index || !matches!(k, OwnKind::Neighbour(_))
                    });
                }
                let name = end.name.clone();
                ns.run(move || ipv6_proxy_sysctls(&name))??;
                self.ends.insert(end.index, mac);
            }
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
            // (Removing it later removes ours only: a removal names protocol 250.)
            self.entries.insert((kind, e));
        }
        let gone: Vec<u32> = self
            .ends
            .keys()
            .filter(|i| ns.is_some() && (!on || !indices.contains(i)))
            .copied()
            .collect();
        for index in gone {
            self.ends.remove(&index);
            if indices.contains(&index) {
                let change = LinkChange {
                    flags_set: IFF_NOARP,
                    ..Default::default()
                };
                rtnl.set_link(index, &change)
                    .map_err(std::io::Error::other)?;
            }
        }
        Ok(())
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

//! What a host end must be, and making it so.
//!
//! A host end is the daemon's: up while its master runs, MTU [`HOST_END_MTU`], NOARP
//! (ARP on instead while its port's host access is on, see `ipvlan_datapath`),
//! no controller, no addresses (IPv6 address generation off), and the alias that marks
//! it as ours ([`Mark`]). [`repair`] says what must change on a host end as it is;
//! [`make_host_end`] reads it and writes that, and is used wherever a host end is
//! written: a slave's creation, its port following the master to another namespace,
//! adoption after a restart, and repair. Someone in the master's namespace can change
//! any of it with plain `ip` (set it down, lower its MTU, clear its alias, make it a
//! bridge port, give it an address); each link or address event on a host end makes it
//! what it must be again, and the log says what was repaired. Renaming it is not
//! repaired (a veth must be down to be renamed; setting it up again is).

use std::collections::BTreeSet;

use ipvlan_core::SlaveId;
use ipvlan_sys::NsKey;
use ipvlan_sys::rtnl::{Addr, IFF_NOARP, IFF_UP, Link, LinkChange, Rtnl, RtnlError};

use super::portmap::PortKey;
use super::{Daemon, Mark, SlaveRec};

/// A host end carries whatever its slave sends (the driver has no TX MTU check).
pub(super) const HOST_END_MTU: u32 = 65535;

/// What a host end must be, beyond what every host end is.
#[derive(Clone, Debug)]
pub(super) struct Want {
    /// The mark it carries (a slave renamed in its namespace keeps its old name there).
    pub mark: Mark,
    pub master_name: String,
    /// It must be up (else it is left as it is: down with its master).
    pub up: bool,
    /// Its IPv6 settings may be the kernel's defaults (it was just made or moved).
    pub ipv6_reset: bool,
}

/// What to write to a host end, in this order.
#[derive(Debug, Default)]
pub(super) struct Repair {
    /// Leave the bridge or bond first: a port's flags and MTU are its controller's.
    pub detach: bool,
    /// Everything but bringing it up.
    pub change: LinkChange,
    /// Up last, once IPv6 address generation is off (else a link-local comes).
    pub up: bool,
    pub del_addrs: Vec<Addr>,
    /// What differed, for the log.
    pub what: Vec<String>,
}

/// What must change on the host end `link`, carrying `addrs`, to be as `want` says.
pub(super) fn repair(link: &Link, addrs: &[Addr], want: &Want) -> Repair {
    let mut r = Repair::default();
    if want.up && !link.is_up() {
        r.up = true;
        r.what.push("set down".to_string());
    }
    if link.flags & IFF_NOARP == 0 && !want.mark.host_access {
        r.change.flags_set |= IFF_NOARP;
        r.what.push("ARP turned on".to_string());
    }
    if link.flags & IFF_NOARP != 0 && want.mark.host_access {
        r.change.flags_clear |= IFF_NOARP;
        r.what.push("ARP turned off".to_string());
    }
    if link.mtu != HOST_END_MTU {
        r.change.mtu = Some(HOST_END_MTU);
        r.what.push(format!("MTU {}", link.mtu));
    }
    let ours = link
        .alias
        .as_deref()
        .and_then(Mark::parse)
        .is_some_and(|m| {
            Mark {
                slave: want.mark.slave.clone(),
                ..m
            } == want.mark
        });
    if !ours {
        r.change.alias = Some(want.mark.alias(&want.master_name));
        r.what
            .push(format!("alias {:?}", link.alias.as_deref().unwrap_or("")));
    }
    if let Some(c) = link.controller.filter(|&c| c != 0) {
        r.detach = true;
        r.what.push(format!("made a port of ifindex {c}"));
    }
    let mine: Vec<Addr> = addrs
        .iter()
        .filter(|a| a.index == link.index)
        .copied()
        .collect();
    if want.ipv6_reset || mine.iter().any(|a| a.ip.is_ipv6()) {
        // A generated link-local comes back unless generation stays off.
        r.change.ipv6_autoconf = Some(false);
    }
    for a in mine {
        r.what.push(format!("address {}", a.ip));
        r.del_addrs.push(a);
    }
    r
}

/// Reads the host end `index` and makes it what `want` says; what differed.
pub(super) fn make_host_end(
    rt: &mut Rtnl,
    index: u32,
    want: &Want,
) -> Result<Vec<String>, RtnlError> {
    let link = rt.link_by_index(index)?.ok_or(RtnlError::Kernel {
        errno: nix::errno::Errno::ENODEV as i32,
    })?;
    let addrs = rt.addrs()?;
    let r = repair(&link, &addrs, want);
    if r.detach {
        let detach = LinkChange {
            controller: Some(0),
            ..Default::default()
        };
        rt.set_link(index, &detach)?;
    }
    let c = &r.change;
    if c.flags_set != 0
        || c.flags_clear != 0
        || c.mtu.is_some()
        || c.alias.is_some()
        || c.ipv6_autoconf.is_some()
    {
        rt.set_link(index, c)?;
    }
    if r.up {
        let up = LinkChange {
            flags_set: IFF_UP,
            ..Default::default()
        };
        rt.set_link(index, &up)?;
    }
    for a in &r.del_addrs {
        match rt.del_addr(a) {
            Err(e) if e.errno() != Some(nix::errno::Errno::EADDRNOTAVAIL as i32) => {
                return Err(e);
            }
            _ => {}
        }
    }
    Ok(r.what)
}

impl Daemon {
    /// The port and slave whose host end has `index` in namespace `ns`.
    pub(super) fn find_host_end(&self, ns: NsKey, index: u32) -> Option<(PortKey, SlaveId)> {
        self.slave_where(ns, |s: &SlaveRec| s.host_index == index)
    }

    /// What the host end of slave `id` of port `k` must be; `up` as the caller needs.
    pub(super) fn host_end_want(&self, k: PortKey, id: SlaveId, up: bool) -> Want {
        let p = &self.ports[k];
        Want {
            mark: Mark {
                owner: self.owner.clone(),
                slave: p
                    .slaves
                    .get(&id)
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                master_index: k.master_index,
                dev_id: id,
                mode: p.port.mode(),
                flags: p.port.flags(),
                source_guard: p.port.source_guard(),
                host_access: p.port.host_access(),
            },
            master_name: p.master_name.clone(),
            up,
            ipv6_reset: false,
        }
    }

    /// Reads a host end again and repairs what was changed from outside.
    pub(super) fn check_host_end(&mut self, ns: NsKey, index: u32) {
        let Some((k, id)) = self.find_host_end(ns, index) else {
            return;
        };
        let want = self.host_end_want(k, id, self.ports[k].master_running);
        let host_name = self.ports[k].slaves[&id].host_name.clone();
        let slave = want.mark.slave.clone();
        let Some(w) = self.watched.get_mut(&ns) else {
            return;
        };
        let Ok(Some(link)) = w.rtnl.link_by_index(index) else {
            return;
        };
        let addrs = w.rtnl.addrs().unwrap_or_default();
        if repair(&link, &addrs, &want).what.is_empty() {
            return;
        }
        if link.flags & IFF_UP == 0 {
            // Taken down: the kernel dropped the routes and neighbour entries through it.
            self.ports[k]
                .datapath
                .host_ends_went_down(&BTreeSet::from([index]));
        }
        match make_host_end(&mut w.rtnl, index, &want) {
            Ok(what) if what.is_empty() => {}
            Ok(what) => tracing::warn!(
                "host end {host_name} of {slave} was changed from outside ({}); repaired it",
                what.join(", ")
            ),
            Err(e) => tracing::error!(
                "host end {host_name} of {slave} was changed from outside; cannot repair it: {e}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ipvlan_core::{Flags, Mode};

    use super::*;

    fn want() -> Want {
        Want {
            mark: Mark {
                owner: "0badf00d".into(),
                slave: "ipvl0".into(),
                master_index: 2,
                dev_id: SlaveId(1),
                mode: Mode::L2,
                flags: Flags::Bridge,
                source_guard: false,
                host_access: false,
            },
            master_name: "eth0".into(),
            up: true,
            ipv6_reset: false,
        }
    }

    /// A host end as it must be.
    fn good() -> Link {
        let w = want();
        Link {
            index: 7,
            name: "ivh2.1".into(),
            flags: IFF_UP | IFF_NOARP,
            mtu: HOST_END_MTU,
            alias: Some(w.mark.alias(&w.master_name)),
            ..Default::default()
        }
    }

    fn addr(index: u32, ip: &str) -> Addr {
        Addr {
            index,
            ip: ip.parse::<IpAddr>().unwrap(),
            prefix: 24,
        }
    }

    #[test]
    fn a_host_end_as_it_must_be_is_left_alone() {
        let r = repair(&good(), &[addr(3, "192.0.2.1")], &want());
        assert!(r.what.is_empty(), "{:?}", r.what);
        assert!(!r.up && !r.detach && r.del_addrs.is_empty());
        assert_eq!(r.change.alias, None);
        assert_eq!(r.change.ipv6_autoconf, None);
    }

    #[test]
    fn a_freshly_made_veth_gets_everything() {
        let fresh = Link {
            flags: 0,
            alias: None,
            ..good()
        };
        let w = Want {
            ipv6_reset: true,
            ..want()
        };
        let r = repair(&fresh, &[], &w);
        assert!(r.up);
        assert_eq!(r.change.flags_set, IFF_NOARP);
        assert_eq!(r.change.ipv6_autoconf, Some(false));
        assert_eq!(r.change.alias, Some(w.mark.alias("eth0")));
        assert_eq!(r.change.mtu, None);
    }

    #[test]
    fn with_host_access_a_host_end_answers_arp() {
        let mut w = want();
        w.mark.host_access = true;
        let mut link = good();
        link.alias = Some(w.mark.alias(&w.master_name));
        let r = repair(&link, &[], &w);
        assert_eq!(r.change.flags_clear, IFF_NOARP);
        assert_eq!(r.what, ["ARP turned off"]);
        link.flags = IFF_UP;
        assert!(repair(&link, &[], &w).what.is_empty());
    }

    #[test]
    fn each_tampering_is_named() {
        let cases: [(&str, Link); 5] = [
            (
                "set down",
                Link {
                    flags: IFF_NOARP,
                    ..good()
                },
            ),
            (
                "ARP turned on",
                Link {
                    flags: IFF_UP,
                    ..good()
                },
            ),
            (
                "MTU 1280",
                Link {
                    mtu: 1280,
                    ..good()
                },
            ),
            (
                "alias \"\"",
                Link {
                    alias: Some(String::new()),
                    ..good()
                },
            ),
            (
                "made a port of ifindex 9",
                Link {
                    controller: Some(9),
                    ..good()
                },
            ),
        ];
        for (what, link) in cases {
            let r = repair(&link, &[], &want());
            assert_eq!(r.what, [what]);
        }
        let bridged = repair(
            &Link {
                controller: Some(9),
                ..good()
            },
            &[],
            &want(),
        );
        assert!(bridged.detach);
    }

    #[test]
    fn down_with_its_master_is_not_a_change() {
        let down = Link {
            flags: IFF_NOARP,
            ..good()
        };
        let w = Want {
            up: false,
            ..want()
        };
        assert!(repair(&down, &[], &w).what.is_empty());
    }

    #[test]
    fn addresses_are_removed_and_ipv6_generation_stays_off() {
        let r = repair(&good(), &[addr(7, "192.0.2.9")], &want());
        assert_eq!(r.del_addrs, [addr(7, "192.0.2.9")]);
        assert_eq!(r.change.ipv6_autoconf, None);
        let r = repair(&good(), &[addr(7, "fe80::1")], &want());
        assert_eq!(r.what, ["address fe80::1"]);
        assert_eq!(r.change.ipv6_autoconf, Some(false));
    }

    #[test]
    fn a_renamed_slave_keeps_its_mark_but_another_mode_does_not() {
        let w = want();
        let renamed = Mark {
            slave: "eth1".into(),
            ..w.mark.clone()
        };
        let link = Link {
            alias: Some(renamed.alias("eth0")),
            ..good()
        };
        assert!(repair(&link, &[], &w).what.is_empty());
        let other = Mark {
            mode: Mode::L3,
            ..w.mark.clone()
        };
        let link = Link {
            alias: Some(other.alias("eth0")),
            ..good()
        };
        assert_eq!(
            repair(&link, &[], &w).change.alias,
            Some(w.mark.alias("eth0"))
        );
    }
}

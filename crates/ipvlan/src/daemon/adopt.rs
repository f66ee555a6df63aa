//! Restart without loss: the marks host ends carry, and taking slaves back.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ipvlan_core::{Flags, Mode, SlaveId};
use ipvlan_datapath::SlaveCounters;
use ipvlan_sys::NetNs;
use ipvlan_sys::netns::all_namespaces;
use ipvlan_sys::packet::PacketSocket;
use ipvlan_sys::rtnl::{Link, Rtnl};

use super::hostend;
use super::{ALIAS_PREFIX, Daemon, Error, SlaveRec};

/// What a host end's alias records: whose it is and its port's mode and flags, so a
/// new daemon can take the slave back. Written as
/// `ipvlan-rs: host end of NAME; master=eth0 ifindex=2 dev_id=1 mode=l2 flags=bridge
/// daemon=1a2b3c4d`, the last being the daemon's identity (its control socket), so that
/// two daemons on one machine never take each other's slaves; ` guard=on` follows when
/// the port's source guard is on, ` host=on` when its host access is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub owner: String,
    pub slave: String,
    pub master_index: u32,
    pub dev_id: SlaveId,
    pub mode: Mode,
    pub flags: Flags,
    pub source_guard: bool,
    pub host_access: bool,
}

impl Mark {
    /// The alias; `master` is the master's name (for people reading `ip link`).
    pub fn alias(&self, master: &str) -> String {
        format!(
            "{ALIAS_PREFIX} host end of {}; master={master} ifindex={} dev_id={} mode={} flags={} daemon={}{}{}",
            self.slave,
            self.master_index,
            self.dev_id.0,
            self.mode.as_str(),
            self.flags.as_str(),
            self.owner,
            if self.source_guard { " guard=on" } else { "" },
            if self.host_access { " host=on" } else { "" }
        )
    }

    /// A daemon's identity: a hash of its control socket's path.
    pub fn owner_of(socket: &Path) -> String {
        let mut h: u32 = 0x811c_9dc5;
        for b in socket.as_os_str().as_encoded_bytes() {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    }

    pub fn parse(alias: &str) -> Option<Self> {
        let rest = alias.strip_prefix(ALIAS_PREFIX)?.trim_start();
        let (head, kv) = rest.split_once(';')?;
        let slave = head.strip_prefix("host end of ")?.to_string();
        let get = |k: &str| {
            kv.split_whitespace()
                .find_map(|t| t.strip_prefix(k)?.strip_prefix('='))
        };
        Some(Self {
            owner: get("daemon")?.to_string(),
            slave,
            master_index: get("ifindex")?.parse().ok()?,
            dev_id: SlaveId(get("dev_id")?.parse().ok()?),
            mode: get("mode")?.parse().ok()?,
            flags: get("flags")?.parse().ok()?,
            source_guard: get("guard") == Some("on"),
            host_access: get("host") == Some("on"),
        })
    }
}

impl Daemon {
    /// Takes back every slave a previous daemon made: the host ends carry their port's
    /// state in their alias ([`Mark`]). Unicast the kernel backend switches never
    /// stopped; the program is replaced by an identical one.
    pub fn adopt(&mut self) {
        for (_, ns) in all_namespaces() {
            let Ok(mut rt) = Rtnl::in_ns(&ns) else {
                continue;
            };
            let Ok(links) = rt.links() else { continue };
            let mut by_master: BTreeMap<u32, Vec<(Mark, Link)>> = BTreeMap::new();
            for l in &links {
                if let Some(m) = l.alias.as_deref().and_then(Mark::parse)
                    && m.owner == self.owner
                {
                    by_master
                        .entry(m.master_index)
                        .or_default()
                        .push((m, l.clone()));
                }
            }
            for (master_index, ends) in by_master {
                let master = links
                    .iter()
                    .find(|l| l.index == master_index && l.mac.is_some());
                let Some(master) = master else {
                    // The master is gone: so are its slaves (spec §7.5).
                    for (_, l) in &ends {
                        let _ = rt.del_link(l.index);
                    }
                    continue;
                };
                match self.adopt_port(&ns, master, &ends) {
                    Ok(n) => {
                        tracing::info!("took back {n} slave(s) of {} in {}", master.name, ns.key())
                    }
                    Err(e) => {
                        tracing::error!("taking back the slaves of {}: {e}", master.name)
                    }
                }
            }
        }
    }

    fn adopt_port(
        &mut self,
        ns: &NetNs,
        master: &Link,
        ends: &[(Mark, Link)],
    ) -> Result<usize, Error> {
        let k = self.new_port(ns, master)?;
        let first = &ends[0].0;
        let port = &mut self.ports[k].port;
        port.apply_changelink(Some(first.mode), Some(first.flags));
        port.set_source_guard(first.source_guard);
        port.set_host_access(first.host_access);
        let mut ids = Vec::new();
        for (mark, host) in ends {
            let id = mark.dev_id;
            if self.ports[k].port.adopt_slave(id).is_err() {
                continue;
            }
            let w = &self.watched[&ns.key()];
            let kind = self.ports[k].datapath.kind();
            let sock = w
                .ns
                .run(|| PacketSocket::open_ring(host.index, kind.ring_slots(false, ids.len())))??;
            self.ports[k].slaves.insert(
                id,
                SlaveRec {
                    host_index: host.index,
                    host_name: host.name.clone(),
                    sock: Arc::new(sock),
                    counters: Arc::new(SlaveCounters::default()),
                    loc: None,
                    name: mark.slave.clone(),
                    flags: 0,
                    mtu: 0,
                },
            );
            ids.push(id);
            // As the previous daemon left it, or as changed while no daemon looked.
            let want = self.host_end_want(k, id, self.ports[k].master_running);
            let w = self
                .watched
                .get_mut(&ns.key())
                .expect("the port's namespace");
            if let Err(e) = hostend::make_host_end(&mut w.rtnl, host.index, &want) {
                tracing::warn!("host end {} of {}: {e}", host.name, mark.slave);
            }
        }
        for &id in &ids {
            if self
                .ports
                .get(k)
                .is_some_and(|p| p.slaves.contains_key(&id))
            {
                self.relocate(k, id);
            }
        }
        if self.ports.contains(k) {
            self.sync_l3s(k)?;
            self.publish(k);
        }
        Ok(ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip() {
        let mut m = Mark {
            owner: "0badf00d".into(),
            slave: "ipvl0".into(),
            master_index: 2,
            dev_id: SlaveId(7),
            mode: Mode::L3s,
            flags: Flags::Private,
            source_guard: false,
            host_access: false,
        };
        let a = m.alias("eth0");
        assert_eq!(
            a,
            "ipvlan-rs: host end of ipvl0; master=eth0 ifindex=2 dev_id=7 mode=l3s flags=private daemon=0badf00d"
        );
        assert_eq!(Mark::parse(&a), Some(m.clone()));
        assert_eq!(Mark::parse("something else"), None);
        assert_eq!(Mark::parse(&a.replace("mode=l3s", "mode=l4")), None);
        m.source_guard = true;
        assert!(m.alias("eth0").ends_with(" guard=on"));
        assert_eq!(Mark::parse(&m.alias("eth0")), Some(m.clone()));
        m.host_access = true;
        assert!(m.alias("eth0").ends_with(" guard=on host=on"));
        assert_eq!(Mark::parse(&m.alias("eth0")), Some(m));
    }
}

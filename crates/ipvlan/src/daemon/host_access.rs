//! Host access (`host_access on|off`, an ipvlan-rs extension): the daemon's part. The
//! datapath carries it out (`ipvlan_datapath`'s `host_access`); here: an address can
//! be the master namespace's or a slave's, not both, while a port's host access is on.
//! A slave address the namespace holds is refused (removed again, like a duplicate);
//! turning host access on while one exists is refused with the address.

use std::net::IpAddr;

use super::Daemon;
use super::portmap::PortKey;

impl Daemon {
    /// The addresses of port `k`'s master namespace (none when they cannot be read,
    /// which is logged).
    fn host_addrs(&mut self, k: PortKey) -> Vec<IpAddr> {
        let Some(w) = self.watched.get_mut(&k.ns) else {
            return vec![];
        };
        match w.rtnl.addrs() {
            Ok(a) => a.into_iter().map(|a| a.ip).collect(),
            Err(e) => {
                tracing::warn!("the addresses of the master's namespace: {e}");
                vec![]
            }
        }
    }

    /// Whether `ip`, new on a slave of port `k`, must be refused: host access is on
    /// and the master's namespace has it.
    pub(super) fn host_clash(&mut self, k: PortKey, ip: IpAddr) -> bool {
        self.ports.get(k).is_some_and(|p| p.port.host_access()) && self.host_addrs(k).contains(&ip)
    }

    /// The lowest address of port `k`'s slaves that its master's namespace has too.
    pub(super) fn host_clashes(&mut self, k: PortKey) -> Option<IpAddr> {
        let host = self.host_addrs(k);
        let p = self.ports.get(k)?;
        let mut both: Vec<IpAddr> = p
            .port
            .table()
            .iter()
            .map(|(ip, _)| ip)
            .filter(|ip| host.contains(ip))
            .collect();
        both.sort();
        both.first().copied()
    }
}

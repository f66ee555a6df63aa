//! Namespaces their owners let go. The daemon's sockets and descriptors in a master's
//! namespace would keep it alive after `ip netns del` or its last process's exit; so
//! the watched namespaces (but the daemon's home) are checked for another holder
//! (`ipvlan_sys::netns::held_elsewhere`) when a name goes from `/run/netns` and every
//! [`HOLDER_CHECK`], and one that nothing else holds is let go: its ports are forgotten,
//! everything the daemon holds there is closed, and the kernel destroys it with its
//! devices, as with the kernel's driver. Its nft tables, BPF programs and L3S rules
//! live in that namespace and go with it; nothing is asked of it on the way out.

use std::time::Duration;

use ipvlan_proto::Notice;
use ipvlan_sys::NsKey;
use ipvlan_sys::netns::{NamedWatch, held_elsewhere};
use mio::Interest;
use mio::unix::SourceFd;

use super::portmap::PortKey;
use super::{Daemon, NAMED};

/// How often the watched namespaces are checked for another holder, for those that
/// go without a name being removed (a container's last process exits).
pub(super) const HOLDER_CHECK: Duration = Duration::from_secs(3);

impl Daemon {
    /// Hears `/run/netns` once it exists (it may not until the first `ip netns add`).
    pub(super) fn watch_named(&mut self) {
        if self.named.is_some() {
            return;
        }
        let Ok(named) = NamedWatch::open() else {
            return;
        };
        use std::os::fd::AsRawFd;
        match self.poll.registry().register(
            &mut SourceFd(&named.as_raw_fd()),
            NAMED,
            Interest::READABLE,
        ) {
            Ok(()) => self.named = Some(named),
            Err(e) => tracing::warn!("cannot hear namespaces deleted by name: {e}"),
        }
    }

    /// A name went from `/run/netns`: its namespace may be let go now.
    pub(super) fn on_named_removed(&mut self) {
        if self.named.as_ref().is_some_and(NamedWatch::drain) {
            self.let_go_released();
        }
    }

    /// Lets go of every watched namespace, but home, that nothing else holds.
    pub(super) fn let_go_released(&mut self) {
        let keys: Vec<NsKey> = self
            .watched
            .keys()
            .copied()
            .filter(|&k| k != self.home)
            .collect();
        if keys.is_empty() {
            return;
        }
        let held = held_elsewhere(&keys);
        for key in keys {
            if !held.contains(&key) {
                self.let_go(key);
            }
        }
    }

    /// Forgets the ports of namespace `key` and closes all the daemon holds there.
    fn let_go(&mut self, key: NsKey) {
        tracing::info!("namespace {key} is let go by its owner: forgetting its ports");
        for k in self.ports.in_ns(key) {
            self.forget_port(k);
        }
        self.unwatch(key);
    }

    /// Forgets a port and its slaves without touching their devices, which go with
    /// the namespace: dropping the datapath stops its switching thread and closes its
    /// sockets.
    fn forget_port(&mut self, k: PortKey) {
        let Some(p) = self.ports.remove(k) else {
            return;
        };
        let master = p.master_name.clone();
        tracing::info!(
            "port of {master} forgotten with its namespace ({} slaves)",
            p.slaves.len()
        );
        drop(p.datapath);
        drop(p.l3s);
        for (id, rec) in p.slaves {
            self.notify(Notice::SlaveRemoved {
                slave: rec.name,
                master: master.clone(),
                dev_id: id.0,
            });
        }
    }
}

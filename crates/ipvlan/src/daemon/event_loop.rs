//! The event loop: what the daemon waits on (the control socket, the metrics endpoint,
//! one rtnetlink monitor per watched namespace, names removed from `/run/netns`), and
//! the ticks between events that let datapaths apply held-back changes, check their
//! nft tables, and let go of namespaces nothing else holds.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipvlan_datapath::kernel::{self, Datapath};
use ipvlan_sys::rtnl::{Monitor, Rtnl};
use ipvlan_sys::{NetNs, NsKey};
use mio::unix::SourceFd;
use mio::{Events, Interest, Token};

use super::{Daemon, LISTENER, METRICS, NAMED, Watched, control, released};

impl Daemon {
    /// Serves until `stop` becomes true.
    pub fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(64);
        self.watch_named();
        while !stop.load(Ordering::Relaxed) {
            let waiting = self.ports.iter().any(|(_, p)| p.datapath.waiting());
            let timeout = if waiting {
                kernel::NFT_QUIET
            } else {
                Duration::from_millis(500)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            let tokens: Vec<Token> = events.iter().map(|e| e.token()).collect();
            for t in tokens {
                if t == LISTENER {
                    self.accept_all();
                } else if t == METRICS {
                    self.serve_metrics();
                } else if t == NAMED {
                    self.on_named_removed();
                } else if let Some(key) = self
                    .watched
                    .iter()
                    .find(|(_, w)| w.token == t)
                    .map(|(k, _)| *k)
                {
                    self.drain_monitor(key);
                }
            }
            self.tick(false);
            if self.checked_tables.elapsed() >= kernel::TABLE_CHECK {
                self.checked_tables = Instant::now();
                self.check_tables();
            }
            if self.checked_holders.elapsed() >= released::HOLDER_CHECK {
                self.checked_holders = Instant::now();
                self.watch_named();
                self.let_go_released();
            }
        }
        self.tick(true);
        Ok(())
    }

    fn accept_all(&mut self) {
        while let Some(stream) = self.control.accept() {
            match control::serve(stream, self) {
                Ok(Some(subscriber)) => self.control.subscribe(subscriber),
                Ok(None) => {}
                Err(e) => tracing::warn!("control connection: {e}"),
            }
        }
    }

    /// Lets every port's datapath apply its held-back changes (all of them, `force`).
    fn tick(&mut self, force: bool) {
        let now = Instant::now();
        for (k, p) in self.ports.values_mut() {
            if let Some(w) = self.watched.get_mut(&k.ns) {
                p.datapath.tick(&mut w.at(), now, force);
            }
        }
    }

    /// Puts back the ports' nft tables that were removed or changed from outside.
    fn check_tables(&mut self) {
        for (key, w) in &mut self.watched {
            let mut ports: Vec<&mut Datapath> = self
                .ports
                .values_mut()
                .filter(|(k, _)| k.ns == *key)
                .map(|(_, p)| &mut p.datapath)
                .collect();
            kernel::restore_tables(&mut w.at(), &mut ports);
        }
    }

    /// Watches namespace `ns` (its monitor in the loop), unless it is already.
    pub(super) fn watch(&mut self, ns: &NetNs) -> io::Result<()> {
        if self.watched.contains_key(&ns.key()) {
            return Ok(());
        }
        let monitor = Monitor::in_ns(ns)?;
        let rtnl = Rtnl::in_ns(ns)?;
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll.registry().register(
            &mut SourceFd(&monitor.as_raw_fd()),
            token,
            Interest::READABLE,
        )?;
        self.watched.insert(
            ns.key(),
            Watched {
                ns: ns.try_clone()?,
                rtnl,
                monitor,
                token,
                nsid_paths: HashMap::new(),
                nft_gen: kernel::Gen::open(ns),
            },
        );
        Ok(())
    }

    pub(super) fn unwatch(&mut self, key: NsKey) {
        if let Some(w) = self.watched.remove(&key) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&w.monitor.as_raw_fd()));
        }
    }
}

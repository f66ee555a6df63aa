//! The kernel backend, and the one datapath per port that both backends go through.
//!
//! The pure compilers are in the core (`ipvlan_core::compile` to the nftables netdev
//! program, `ipvlan_core::fastpath` to the BPF programs); the user backend's tables
//! (the guard, the L3S table) are compiled in [`crate::guard`]. This module runs them:
//!
//! * [`Datapath`]: a port's datapath, whichever backend switches its unicast. The daemon
//!   hands it the port's snapshot ([`Datapath::apply`]), lets time pass
//!   ([`Datapath::tick`]), asks what the program dropped ([`Datapath::program_drops`]) and
//!   takes it down ([`Datapath::remove`]). It owns the port's switching thread
//!   ([`crate::user`]; in the kernel backend it carries only fan-out, routed egress and
//!   L3S ingress), the packet sockets' filters, the nft tables (the kernel backend's
//!   program or the user backend's guard, and the L3S table) and the BPF fast path.
//!   Where the kernel cannot run the program, the port falls back to the user backend.
//! * `programs`: the nft programs applied and waiting, applied as one transaction each;
//!   `coalesce`: when a change waits for the ones that follow (pure, tested without root).
//! * `tables`: the tables put back when something outside removed or changed them.
//! * `fast`: the BPF fast path (the master's and the host ends' programs, their maps,
//!   the host-end sockets' filter).
//! * [`l3s`]: L3S routed through the master namespace's stack where the fast path runs
//!   (routes, rules, neighbour entries, sysctls); elsewhere L3S goes through the daemon.

mod coalesce;
mod fast;
mod host_access;
pub mod l3s;
mod programs;
mod tables;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipvlan_core::{Mode, PortSnapshot, SlaveId, compile};
use ipvlan_sys::NetNs;
use ipvlan_sys::nfqueue::NfQueue;
use ipvlan_sys::packet::PacketSocket;
use ipvlan_sys::raw::RawSender;
use ipvlan_sys::rtnl::{Netconf, Rtnl};

use crate::user::UserBackend;
use crate::{Backend, Plan, PlanSlave, SlaveCounters, guard};

pub use coalesce::NFT_QUIET;
pub use programs::ProgramDrops;
pub use tables::{Gen, TABLE_CHECK, restore_tables};

/// Where a port's datapath works: its master's namespace, a request socket there, and
/// the namespace's nftables generation (shared by the ports of the namespace).
pub struct At<'a> {
    pub ns: &'a NetNs,
    pub rtnl: &'a mut Rtnl,
    pub generation: &'a mut Gen,
}

/// A port's master, as its datapath is started on it.
pub struct Master {
    pub index: u32,
    pub name: String,
    /// The packet socket on the master.
    pub sock: Arc<PacketSocket>,
    /// Carries the L3/L3S egress, routed in the master's namespace.
    pub raw: Option<RawSender>,
}

/// One slave's host end.
#[derive(Clone, Debug)]
pub struct HostEnd {
    pub id: SlaveId,
    pub index: u32,
    pub name: String,
    pub sock: Arc<PacketSocket>,
    pub counters: Arc<SlaveCounters>,
    /// The slave end is in another namespace than the master.
    pub away: bool,
}

/// A port in L3S mode: the queue its slave-bound packets arrive on.
#[derive(Clone, Debug)]
pub struct L3sQueue {
    pub num: u16,
    pub queue: Arc<NfQueue>,
}

/// What a port's datapath is made to carry out.
#[derive(Clone, Debug)]
pub struct PortInput {
    pub snap: PortSnapshot,
    /// Every slave's host end, in dev_id order.
    pub ends: Vec<HostEnd>,
    pub l3s: Option<L3sQueue>,
}

/// One port's datapath (see the module doc).
pub struct Datapath {
    /// Which backend switches the port's unicast.
    kind: Backend,
    /// Kernel-backend ports get the BPF fast path.
    fast_path: bool,
    master_index: u32,
    master_name: String,
    master_sock: Arc<PacketSocket>,
    switch: UserBackend,
    /// The mode the packet sockets' filters were last set for.
    filtered_for: Option<Mode>,
    nft: programs::Nft,
    /// `None` where it could not be set up, and until the first apply.
    fast: Option<fast::FastPath>,
    /// Setting up the fast path failed once: the port runs on nftables alone.
    fast_failed: bool,
    /// What the last apply was given: applied again on a fallback or a restore.
    last: Option<PortInput>,
    /// The master namespace's side of host access (both backends).
    host_access: host_access::HostAccess,
    /// L3S routed in the kernel (see [`l3s`]).
    l3s_routing: Option<l3s::Routing>,
}

impl Datapath {
    /// Starts the datapath of a port with no slaves yet on `master`; a switching thread
    /// polls for `busy_poll` after a frame before it sleeps.
    pub fn start(
        kind: Backend,
        fast_path: bool,
        master: Master,
        snap: PortSnapshot,
        busy_poll: Duration,
    ) -> std::io::Result<Self> {
        let switch = UserBackend::start(
            master.sock.clone(),
            master.raw,
            Plan::new(snap, vec![], None, false),
            busy_poll,
        )?;
        Ok(Self {
            kind,
            fast_path,
            master_index: master.index,
            master_name: master.name,
            master_sock: master.sock,
            switch,
            filtered_for: None,
            nft: programs::Nft::default(),
            fast: None,
            fast_failed: false,
            last: None,
            host_access: host_access::HostAccess::default(),
            l3s_routing: None,
        })
    }

    /// The backend that switches the port's unicast now.
    pub fn kind(&self) -> Backend {
        self.kind
    }

    /// An address of the master's namespace came or went: the fast path reads them
    /// again (L3 egress keeps local destinations off the kernel's routing).
    /// With host access, the proxies of an L2 port follow them too.
    pub fn local_addrs_changed(&mut self, rtnl: &mut Rtnl) -> std::io::Result<()> {
        if let Some(f) = &mut self.fast {
            f.local_addrs_changed(rtnl)?;
        }
        if let Some(input) = self.last.as_ref().filter(|i| i.snap.host_access) {
            self.host_access.read_local6(rtnl)?;
            let l3s = self.l3s_routing.is_some();
            self.host_access.sync(rtnl, &input.snap, &input.ends, l3s)?;
        }
        Ok(())
    }

    /// Host ends `indices` went down (with the master, or taken down from outside):
    /// the kernel dropped every route and neighbour entry through them, the L3S
    /// routing's and host access's; the next [`Self::apply`] makes them again.
    pub fn host_ends_went_down(&mut self, indices: &BTreeSet<u32>) {
        if let Some(r) = &mut self.l3s_routing {
            r.entries_dropped(indices);
        }
        self.host_access.host_ends_went_down(indices);
    }

    /// The master was renamed: what names it (the nft programs' device hooks and
    /// `iifname` matches, the L3S routing's rules and sysctls) is made again under the
    /// new name.
    pub fn master_renamed(&mut self, at: &mut At<'_>, name: &str) {
        if self.master_name == name {
            return;
        }
        self.master_name = name.to_string();
        if let Some(r) = &mut self.l3s_routing
            && let Err(e) = r.master_renamed(at.ns, at.rtnl, name)
        {
            tracing::error!("L3S routing for the renamed master {name}: {e}");
        }
        self.reapply(at);
    }

    /// A setting of the master's namespace changed (`conf`): the L3S routing follows
    /// (see `l3s::Routing::follow_forwarding`).
    pub fn forwarding_changed(
        &mut self,
        ns: &NetNs,
        rtnl: &mut Rtnl,
        conf: &Netconf,
    ) -> std::io::Result<()> {
        match &mut self.l3s_routing {
            Some(r) => r.follow_forwarding(ns, rtnl, conf),
            None => Ok(()),
        }
    }

    /// In L3S, the kernel carries the port's traffic through the master namespace's
    /// stack (see [`l3s`]): the daemon sets up no NFQUEUE for it. Otherwise (the user
    /// backend, the fast path off or not loadable) L3S goes through the daemon.
    pub fn routes_l3s(&self) -> bool {
        self.kind == Backend::Kernel && self.fast_path && !self.fast_failed
    }

    /// The BPF fast path is switching some of the port's unicast.
    pub fn fast_path_active(&self) -> bool {
        self.fast.as_ref().is_some_and(|f| f.active())
    }

    /// Brings the whole datapath in line with the port. The nft tables change at once,
    /// or with the changes that follow (see `coalesce`) at a later [`Self::tick`].
    pub fn apply(&mut self, at: &mut At<'_>, input: PortInput) {
        let snap = &input.snap;
        if self.filtered_for != Some(snap.mode) {
            let (master, hosts) = self.kind.filters(snap.mode);
            let mut res = self.master_sock.set_filter(master);
            for e in &input.ends {
                res = res.and(e.sock.set_filter(hosts));
            }
            match res {
                Ok(()) => self.filtered_for = Some(snap.mode),
                Err(e) => tracing::error!("socket filters for {}: {e}", self.master_name),
            }
        }
        let ends: Vec<(SlaveId, String)> =
            input.ends.iter().map(|e| (e.id, e.name.clone())).collect();
        let mut addrs: Vec<IpAddr> = snap.table.iter().map(|(ip, _)| ip).collect();
        addrs.sort();
        let prog = match self.kind {
            Backend::Kernel => compile::program(
                snap,
                &guard::table_name(self.master_index),
                &self.master_name,
                &ends,
            ),
            Backend::User => {
                let mut prog = guard::program(
                    self.master_index,
                    &self.master_name,
                    &ends,
                    addrs.iter().copied(),
                    input.l3s.is_some(),
                );
                guard::add_host_access(&mut prog, snap, &ends);
                prog
            }
        };
        let l3s_prog = input
            .l3s
            .as_ref()
            .map(|l| guard::l3s_program(self.master_index, &self.master_name, l.num, addrs));
        let by_id: HashMap<SlaveId, &HostEnd> = input.ends.iter().map(|e| (e.id, e)).collect();
        let slaves = snap
            .slaves
            .iter()
            .filter_map(|s| {
                by_id.get(&s.id).map(|e| PlanSlave {
                    id: s.id,
                    sock: e.sock.clone(),
                    counters: e.counters.clone(),
                })
            })
            .collect();
        let queue = input.l3s.as_ref().map(|l| l.queue.clone());
        self.switch.update(Plan::new(
            snap.clone(),
            slaves,
            queue,
            self.kind == Backend::Kernel,
        ));
        self.sync_fast(at, &input);
        match self
            .host_access
            .sync_ends(at.ns, at.rtnl, &input.snap, &input.ends)
        {
            Ok(flushed) => {
                if let Some(r) = &mut self.l3s_routing {
                    r.entries_dropped(&flushed);
                }
            }
            Err(e) => tracing::error!("host access for {}: {e}", self.master_name),
        }
        self.sync_l3s_routing(at, &input);
        // After the L3S routing, which may hand the slaves' neighbour entries over.
        if let Err(e) = self.host_access.sync(
            at.rtnl,
            &input.snap,
            &input.ends,
            self.l3s_routing.is_some(),
        ) {
            tracing::error!("host access for {}: {e}", self.master_name);
        }
        let at_once = self.nft.stage(prog, l3s_prog, Instant::now());
        self.last = Some(input);
        if at_once {
            self.apply_nft(at);
        }
    }

    /// Applies the last input again, the nft tables whole.
    fn reapply(&mut self, at: &mut At<'_>) {
        if let Some(input) = self.last.take() {
            self.apply(at, input);
        }
    }

    /// nft changes are held back, to be applied at a [`Self::tick`].
    pub fn waiting(&self) -> bool {
        self.nft.waiting()
    }

    /// Applies the held-back nft changes if they are due at `now` (with `force`: if
    /// there are any).
    pub fn tick(&mut self, at: &mut At<'_>, now: Instant, force: bool) {
        if self.nft.waiting() && (force || self.nft.due(now)) {
            self.apply_nft(at);
        }
    }

    /// Frames the kernel backend's program dropped for the port's slaves, by reason
    /// (none in the user backend, which counts its own in the slaves' counters).
    pub fn program_drops(&self, ns: &NetNs) -> Vec<ProgramDrops> {
        match self.kind {
            Backend::Kernel => programs::program_drops(ns, &guard::table_name(self.master_index)),
            Backend::User => vec![],
        }
    }

    /// The port is leaving L3S: its L3S table is gone (the caller removes it).
    pub fn forget_l3s_table(&mut self) {
        self.nft.l3s_prog = None;
    }

    /// Takes the port's programs off its master and host ends and removes its nft
    /// tables; the switching thread stops.
    pub fn remove(mut self, at: &mut At<'_>) {
        if let Some(r) = self.l3s_routing.take() {
            r.remove(at.ns, at.rtnl);
        }
        if let Some(f) = self.fast.take() {
            f.remove(at.ns, at.rtnl, self.master_index);
        }
        std::mem::take(&mut self.host_access).remove(at.rtnl);
        if let Err(e) = ipvlan_sys::nft::apply(at.ns, &guard::teardown(self.master_index)) {
            tracing::warn!("removing the guard of {}: {e}", self.master_name);
        }
    }

    fn apply_nft(&mut self, at: &mut At<'_>) {
        match self.nft.apply(at.ns, at.generation) {
            Ok(()) => {}
            Err(e) if self.kind == Backend::Kernel => {
                tracing::error!(
                    "the kernel backend cannot run here ({e}); port {} falls back to the user backend",
                    self.master_name
                );
                self.kind = Backend::User;
                self.filtered_for = None;
                self.nft.prog = None;
                self.reapply(at);
            }
            Err(e) => tracing::error!("guard for {}: {e}", self.master_name),
        }
    }

    /// Sets up, follows or removes the port's L3S routing (see [`l3s`]).
    fn sync_l3s_routing(&mut self, at: &mut At<'_>, input: &PortInput) {
        let want = input.snap.mode == Mode::L3s && self.routes_l3s() && self.fast.is_some();
        if !want {
            if let Some(r) = self.l3s_routing.take() {
                r.remove(at.ns, at.rtnl);
            }
            return;
        }
        let ends: Vec<(SlaveId, u32, String)> = input
            .ends
            .iter()
            .map(|e| (e.id, e.index, e.name.clone()))
            .collect();
        let r = self
            .l3s_routing
            .get_or_insert_with(|| l3s::Routing::new(self.master_index, &self.master_name));
        if let Err(e) = r.sync(at.ns, at.rtnl, &input.snap, &ends) {
            tracing::error!("L3S routing for {}: {e}", self.master_name);
        }
    }

    /// Brings the port's fast path in line with `input` (see `fast`). A failure leaves
    /// the port on its nftables program alone, which switches the same frames.
    fn sync_fast(&mut self, at: &mut At<'_>, input: &PortInput) {
        if self.fast_failed {
            return;
        }
        let snap = &input.snap;
        let ends: HashMap<SlaveId, fast::End> = input
            .ends
            .iter()
            .map(|e| {
                (
                    e.id,
                    fast::End {
                        host_index: e.index,
                        sock: e.sock.clone(),
                        away: e.away,
                    },
                )
            })
            .collect();
        let on = self.kind == Backend::Kernel && self.fast_path;
        if self.fast.as_ref().is_some_and(|f| f.on() != on) {
            self.fast = None;
        }
        let master = self.master_index;
        let res = match &mut self.fast {
            Some(f) => f.sync(at.ns, at.rtnl, snap, master, &ends),
            None => fast::FastPath::new(on).and_then(|mut f| {
                let r = f.sync(at.ns, at.rtnl, snap, master, &ends);
                self.fast = Some(f);
                r
            }),
        };
        if let Err(e) = res {
            tracing::warn!(
                "no BPF fast path for {} ({e}); its unicast is switched by nftables alone",
                self.master_name
            );
            if let Some(f) = self.fast.take() {
                f.remove(at.ns, at.rtnl, master);
            }
            // Host-end sockets may hold the fast path's socket filter: the backend's own.
            let hosts = self.kind.filters(snap.mode).1;
            for e in &input.ends {
                if let Err(err) = e.sock.set_filter(hosts) {
                    tracing::error!("socket filter for {}: {err}", e.name);
                }
            }
            self.fast_failed = true;
        }
    }
}

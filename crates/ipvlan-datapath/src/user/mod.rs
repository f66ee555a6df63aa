//! The user-space backend: one switching thread per port.
//!
//! It reads frames from the master's packet socket and from every host end's, asks
//! [`ipvlan_core::decide()`] what to do, and writes them where the decision says. Frames
//! keep their virtio-net header end to end, so GSO super-frames are switched whole.
//!
//! Each socket of a port the user backend switches receives into a ring shared with the
//! kernel (`TPACKET_V2`, [`ipvlan_sys::packet`], sized by [`crate::Backend::ring_slots`]):
//! frames up to the MTU are read in place, with no system call;
//! a longer one (a GSO super-frame) waits in the socket's queue and is read with one
//! `recv` into the thread's one big buffer. Frames read from one socket are switched a
//! batch at a time and sent, wherever each goes, with one `sendmmsg` through the
//! master's socket, straight from the ring. Nothing is allocated, locked or copied per
//! frame. Sockets are served round-robin, a bounded batch at a time, so a slave that
//! floods cannot starve the others. A socket without a ring (the kernel backend's, which
//! carry little) is read with one `recv` per frame.
//!
//! With a busy-poll time ([`UserBackend::start`]), the thread keeps polling that long
//! after its last frame before it sleeps: a request's answer then finds it awake, which
//! saves two thread wake-ups a round trip, for the CPU time spent polling.
//!
//! The backlog is bounded: a socket's ring and receive buffer. What overflows them the
//! kernel counts per socket; every [`STATS_EVERY`] the thread adds those counts to the
//! slave's `queue_full` drops (the master's to [`MasterCounters::dropped`]).

mod out;
mod switch;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipvlan_core::wire::gso;
use ipvlan_sys::packet::{MAX_FRAME, PacketSocket, SendBatch};
use ipvlan_sys::raw::RawSender;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Waker};

use out::Io;
pub use out::MasterCounters;
pub use switch::STATS_EVERY;
use switch::{MASTER, SEND_BATCH, Switch, WAKER};

use crate::Plan;

/// Ring slots of a slave's host-end socket, and of the master's (which carries every
/// slave's traffic with the outside): 2 KiB each, allocated up front. The first
/// [`ROOMY_SLAVES`] slaves of a port get [`ROOMY_SLAVE_RING`] (bursts of a few hundred
/// frames from an application pass); later ones [`SLAVE_RING`], so that the daemon's
/// memory stays within 16 MiB plus 64 KiB a slave however many there are.
pub const SLAVE_RING: u32 = 32;
pub const ROOMY_SLAVE_RING: u32 = 256;
pub const ROOMY_SLAVES: usize = 32;
pub const MASTER_RING: u32 = 256;

/// A running user backend for one port.
pub struct UserBackend {
    plan: Arc<ArcSwap<Plan>>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub master_counters: Arc<MasterCounters>,
}

impl UserBackend {
    /// Starts switching for a port whose master socket is `master`; `raw` carries the
    /// L3/L3S egress (routed in the master's namespace). After a frame, the thread polls
    /// for `busy_poll` before it sleeps.
    pub fn start(
        master: Arc<PacketSocket>,
        raw: Option<RawSender>,
        plan: Plan,
        busy_poll: Duration,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let plan = Arc::new(ArcSwap::from_pointee(plan));
        let stop = Arc::new(AtomicBool::new(false));
        let master_counters = Arc::new(MasterCounters::default());
        let mut sw = Switch {
            poll,
            io: Io {
                master,
                raw,
                master_counters: master_counters.clone(),
            },
            plan: plan.clone(),
            current: plan.load_full(),
            registered: Vec::new(),
            queue: None,
            stop: stop.clone(),
            busy_poll,
            buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
            scratch: vec![0u8; gso::SCRATCH_LEN].into_boxed_slice(),
            tx: SendBatch::new(SEND_BATCH),
            tx_buf: SendBatch::new(SEND_BATCH),
        };
        sw.poll.registry().register(
            &mut SourceFd(&sw.io.master.as_raw_fd()),
            MASTER,
            Interest::READABLE,
        )?;
        sw.reconcile()?;
        let thread = std::thread::Builder::new()
            .name("ipvlan-switch".into())
            .spawn(move || sw.run())?;
        Ok(Self {
            plan,
            waker,
            stop,
            thread: Some(thread),
            master_counters,
        })
    }

    /// Replaces the plan; the switching thread takes it before its next frame.
    pub fn update(&self, plan: Plan) {
        self.plan.store(Arc::new(plan));
        let _ = self.waker.wake();
    }
}

impl std::ops::Drop for UserBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! The switching thread of a port (`Switch`): it waits on the master's socket, every
//! host end's and the L3S queue, serves them round-robin a bounded batch at a time,
//! asks `decide()` about each frame and hands the decision to `Io`; it takes a new plan
//! when the daemon stores one, and collects the sockets' drop counts.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ipvlan_core::{DropReason, Ingress, SlaveId};
use ipvlan_sys::nfqueue::{NfQueue, Verdict};
use ipvlan_sys::packet::{RxFrame, SendBatch};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::out::{Io, Rx};
use crate::{Plan, PlanSlave};

pub(super) const WAKER: Token = Token(0);
pub(super) const MASTER: Token = Token(1);
const QUEUE: Token = Token(usize::MAX);
/// Frames read from one socket before the next socket gets its turn.
const BATCH: usize = 64;
/// Frames queued for one `sendmmsg` (a flood queues one per slave; more are sent in
/// several calls).
pub(super) const SEND_BATCH: usize = 128;
/// How often the kernel's drop counts are collected from the sockets.
pub const STATS_EVERY: Duration = Duration::from_millis(500);

fn slave_token(id: SlaveId) -> Token {
    Token(2 + id.0 as usize)
}

pub(super) struct Switch {
    pub(super) poll: Poll,
    pub(super) io: Io,
    pub(super) plan: Arc<ArcSwap<Plan>>,
    pub(super) current: Arc<Plan>,
    /// Slaves whose sockets are registered with `poll`.
    pub(super) registered: Vec<PlanSlave>,
    /// The L3S queue registered with `poll`, if any.
    pub(super) queue: Option<Arc<NfQueue>>,
    pub(super) stop: Arc<AtomicBool>,
    /// How long to keep polling after the last frame before sleeping.
    pub(super) busy_poll: Duration,
    /// The frame being switched.
    pub(super) buf: Box<[u8]>,
    /// Where super-frames are cut into packets for the raw sockets.
    pub(super) scratch: Box<[u8]>,
    /// Frames switched from a ring, sent together.
    pub(super) tx: SendBatch,
    /// Frames switched from `buf`.
    pub(super) tx_buf: SendBatch,
}

impl Switch {
    /// Registers new slaves' sockets (and the L3S queue) and deregisters removed ones.
    pub(super) fn reconcile(&mut self) -> io::Result<()> {
        let plan = self.current.clone();
        let same_queue = match (&self.queue, &plan.queue) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same_queue {
            if let Some(old) = self.queue.take() {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&old.as_raw_fd()));
            }
            if let Some(q) = &plan.queue {
                self.poll.registry().register(
                    &mut SourceFd(&q.as_raw_fd()),
                    QUEUE,
                    Interest::READABLE,
                )?;
                self.queue = Some(q.clone());
            }
        }
        self.registered.retain(|old| {
            let keep = plan
                .slaves
                .iter()
                .any(|s| s.id == old.id && Arc::ptr_eq(&s.sock, &old.sock));
            if !keep {
                collect_drops(old);
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&old.sock.as_raw_fd()));
            }
            keep
        });
        for s in &plan.slaves {
            if !self
                .registered
                .iter()
                .any(|r| Arc::ptr_eq(&r.sock, &s.sock))
            {
                self.poll.registry().register(
                    &mut SourceFd(&s.sock.as_raw_fd()),
                    slave_token(s.id),
                    Interest::READABLE,
                )?;
                self.registered.push(s.clone());
            }
        }
        Ok(())
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        // Sockets that may still hold frames (edge-triggered polling).
        let mut ready: Vec<Token> = Vec::new();
        let mut stats_due = Instant::now() + STATS_EVERY;
        let mut awake_until = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= stats_due {
                self.collect_drops();
                stats_due = now + STATS_EVERY;
            }
            let timeout = if ready.is_empty() && now >= awake_until {
                Some(stats_due - now)
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("switch poll failed: {e}");
                    return;
                }
                continue;
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    self.current = self.plan.load_full();
                    if let Err(e) = self.reconcile() {
                        tracing::error!("switch cannot register a socket: {e}");
                    }
                } else if !ready.contains(&ev.token()) {
                    ready.push(ev.token());
                }
            }
            if !ready.is_empty() && !self.busy_poll.is_zero() {
                awake_until = Instant::now() + self.busy_poll;
            }
            ready.retain(|&t| self.serve(t));
        }
    }

    /// Adds what the kernel dropped on every socket since the last call to the
    /// counters.
    fn collect_drops(&self) {
        for s in &self.registered {
            collect_drops(s);
        }
        if let Ok(st) = self.io.master.take_stats() {
            let c = &self.io.master_counters.dropped;
            c.fetch_add(u64::from(st.drops), Ordering::Relaxed);
        }
    }

    /// Serves up to [`BATCH`] frames from one socket; false once it is empty or gone.
    fn serve(&mut self, token: Token) -> bool {
        let plan = self.current.clone();
        if token == QUEUE {
            return self.serve_queue(&plan);
        }
        let (ingress, from) = if token == MASTER {
            (Ingress::Master, None)
        } else {
            let Ok(id) = u16::try_from(token.0 - 2).map(SlaveId) else {
                return false;
            };
            match plan.position(id) {
                Some(i) => (Ingress::Slave(id), Some(i)),
                None => return false,
            }
        };
        let master = self.io.master.clone();
        let sock = match from {
            None => &*master,
            Some(i) => &*plan.slaves[i].sock,
        };
        let rx = Rx {
            plan: &plan,
            sock,
            ingress,
            from,
        };
        match sock.reader() {
            Some(ring) => self.serve_ring(&rx, ring),
            None => (0..BATCH).all(|_| self.serve_one(&rx)),
        }
    }

    /// Switches up to [`BATCH`] frames from a socket's ring; false once it is empty.
    fn serve_ring(&mut self, rx: &Rx<'_>, mut ring: ipvlan_sys::packet::RingReader<'_>) -> bool {
        let io = &self.io;
        let mut out = self.tx.start();
        let mut more = true;
        for _ in 0..BATCH {
            match ring.next() {
                None => {
                    more = false;
                    break;
                }
                Some(RxFrame::Whole(f)) => io.switch(rx, f, &mut out, &mut self.scratch),
                Some(RxFrame::Queued) => {
                    // Frames leave in the order they came.
                    io.flush(rx.plan, &mut out);
                    let n = match rx.sock.recv(&mut self.buf) {
                        Ok(n) => n,
                        Err(_) => {
                            io.lost(rx);
                            continue;
                        }
                    };
                    let mut one = self.tx_buf.start();
                    io.switch(rx, &self.buf[..n], &mut one, &mut self.scratch);
                    io.flush(rx.plan, &mut one);
                }
                Some(RxFrame::Lost) => io.lost(rx),
            }
        }
        io.flush(rx.plan, &mut out);
        drop(out);
        ring.release();
        more
    }

    /// Switches one frame from a socket without a ring; false once it is empty.
    fn serve_one(&mut self, rx: &Rx<'_>) -> bool {
        let n = loop {
            match rx.sock.recv(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    // ENETDOWN while a device is down is expected; the socket stays bound.
                    tracing::debug!("recv on ifindex {}: {e}", rx.sock.ifindex());
                    return false;
                }
            }
        };
        let mut out = self.tx_buf.start();
        self.io
            .switch(rx, &self.buf[..n], &mut out, &mut self.scratch);
        self.io.flush(rx.plan, &mut out);
        true
    }
}

/// Adds what the kernel dropped on a slave's socket to its counters.
fn collect_drops(s: &PlanSlave) {
    if let Ok(st) = s.sock.take_stats()
        && st.drops > 0
    {
        s.counters
            .dropped_n(DropReason::QueueFull, u64::from(st.drops));
    }
}

impl Switch {
    /// L3S ingress: packets for slaves that crossed the master namespace's PREROUTING
    /// and INPUT. Each is delivered to its slave; the verdict lets the master's stack
    /// finish with it (conntrack confirms the flow there; see `guard`).
    fn serve_queue(&mut self, plan: &Plan) -> bool {
        let Some(q) = self.queue.clone() else {
            return false;
        };
        for _ in 0..BATCH {
            let packets = match q.recv(&mut self.buf) {
                Ok(Some(p)) => p,
                Ok(None) => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            for p in packets.flatten() {
                self.io.deliver_queued(plan, &p, &mut self.scratch);
                let _ = q.verdict(p.id, Verdict::Accept);
            }
        }
        true
    }
}

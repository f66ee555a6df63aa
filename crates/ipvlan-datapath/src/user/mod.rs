//! The user-space backend: one switching thread per port.
//!
//! It reads frames from the master's packet socket and from every host end's, asks
//! [`ipvlan_core::decide`] what to do, and writes them where the decision says. Frames
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

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ipvlan_core::wire::vnet::VnetHdr;
use ipvlan_core::wire::{ethernet, gso, ipv4, ipv6};
use ipvlan_core::{Decision, DropReason, Ingress, MacAddr, SlaveId, decide};
use ipvlan_sys::nfqueue::{NfQueue, QueuedPacket, Verdict};
use ipvlan_sys::packet::{Batch, MAX_FRAME, PacketSocket, RxFrame, SendBatch, VNET_HDR_LEN};
use ipvlan_sys::raw::RawSender;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::{Plan, PlanSlave};

const WAKER: Token = Token(0);
const MASTER: Token = Token(1);
const QUEUE: Token = Token(usize::MAX);
/// Frames read from one socket before the next socket gets its turn.
const BATCH: usize = 64;
/// Frames queued for one `sendmmsg` (a flood queues one per slave; more are sent in
/// several calls).
const SEND_BATCH: usize = 128;
/// Ring slots of a slave's host-end socket, and of the master's (which carries every
/// slave's traffic with the outside): 2 KiB each, allocated up front. The first
/// [`ROOMY_SLAVES`] slaves of a port get [`ROOMY_SLAVE_RING`] (bursts of a few hundred
/// frames from an application pass); later ones [`SLAVE_RING`], so that the daemon's
/// memory stays within 16 MiB plus 64 KiB a slave however many there are.
pub const SLAVE_RING: u32 = 32;
pub const ROOMY_SLAVE_RING: u32 = 256;
pub const ROOMY_SLAVES: usize = 32;
pub const MASTER_RING: u32 = 256;
/// How often the kernel's drop counts are collected from the sockets.
pub const STATS_EVERY: Duration = Duration::from_millis(500);

/// A [`SendBatch`] tag: the index of the receiving slave in the plan, or [`TO_WIRE`]
/// with the sender's index ([`FROM_WIRE`] for a frame that came from the wire).
const TO_WIRE: u32 = 1 << 31;
const FROM_WIRE: u32 = TO_WIRE - 1;

/// The tag a frame queued for (or from) the slave at position `i` carries: below
/// [`TO_WIRE`], as positions are indices of `by_id`'s `u32`s.
fn slave_tag(i: usize) -> u32 {
    u32::try_from(i).expect("a slave position is a u32")
}

fn slave_token(id: SlaveId) -> Token {
    Token(2 + id.0 as usize)
}

/// Counters of frames that no slave can be blamed for (from the wire).
#[derive(Debug, Default)]
pub struct MasterCounters {
    pub rx_frames: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
}

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

struct Switch {
    poll: Poll,
    io: Io,
    plan: Arc<ArcSwap<Plan>>,
    current: Arc<Plan>,
    /// Slaves whose sockets are registered with `poll`.
    registered: Vec<PlanSlave>,
    /// The L3S queue registered with `poll`, if any.
    queue: Option<Arc<NfQueue>>,
    stop: Arc<AtomicBool>,
    /// How long to keep polling after the last frame before sleeping.
    busy_poll: Duration,
    /// The frame being switched.
    buf: Box<[u8]>,
    /// Where super-frames are cut into packets for the raw sockets.
    scratch: Box<[u8]>,
    /// Frames switched from a ring, sent together.
    tx: SendBatch,
    /// Frames switched from `buf`.
    tx_buf: SendBatch,
}

/// Where frames go out, apart from the slaves' own sockets.
struct Io {
    master: Arc<PacketSocket>,
    raw: Option<RawSender>,
    master_counters: Arc<MasterCounters>,
}

impl Switch {
    /// Registers new slaves' sockets (and the L3S queue) and deregisters removed ones.
    fn reconcile(&mut self) -> io::Result<()> {
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

    fn run(mut self) {
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

/// The socket being read, and what its frames are.
struct Rx<'a> {
    plan: &'a Plan,
    sock: &'a PacketSocket,
    ingress: Ingress,
    /// The sending slave's index in the plan; `None` for the master.
    from: Option<usize>,
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

impl Io {
    fn deliver_queued(&self, plan: &Plan, p: &QueuedPacket<'_>, scratch: &mut [u8]) {
        let ip = p.payload;
        let (dst, ethertype, l4_off, proto) = if let Ok(v4) = ipv4::Packet::new_checked(ip) {
            (
                IpAddr::V4(v4.dst()),
                ethernet::ETHERTYPE_IPV4,
                v4.header_len(),
                v4.protocol(),
            )
        } else if let Ok(v6) = ipv6::Packet::new_checked(ip) {
            (
                IpAddr::V6(v6.dst()),
                ethernet::ETHERTYPE_IPV6,
                ipv6::HEADER_LEN,
                v6.next_header(),
            )
        } else {
            return;
        };
        let Some(i) = plan.snap.table.owner(&dst).and_then(|id| plan.position(id)) else {
            return;
        };
        let to = &plan.slaves[i];
        let master = plan.snap.master_mac;
        let eth = ethernet::Repr {
            dst: master,
            src: p.hwaddr.map_or(master, MacAddr),
            ethertype,
        };
        let len = VNET_HDR_LEN + eth.buffer_len(ip.len());
        if len > scratch.len() {
            to.counters.dropped(DropReason::Malformed);
            return;
        }
        let mut hdr = VnetHdr::default();
        if p.csum_not_ready() {
            let csum_offset = match proto {
                6 => 16,
                17 => 6,
                _ => 0,
            };
            if csum_offset != 0 {
                hdr.flags = ipvlan_core::wire::vnet::F_NEEDS_CSUM;
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "an Ethernet header and an IP header (IPv4's at most 60 bytes)"
                )]
                let csum_start = (ethernet::HEADER_LEN + l4_off) as u16;
                hdr.csum_start = csum_start;
                hdr.csum_offset = csum_offset;
            }
        }
        if hdr.emit(&mut scratch[..VNET_HDR_LEN]).is_err() {
            return;
        }
        let Ok(mut frame) = ethernet::Frame::new_checked(&mut scratch[VNET_HDR_LEN..len]) else {
            return;
        };
        eth.emit(&mut frame);
        frame.payload_mut().copy_from_slice(ip);
        match to.sock.send(&scratch[..len]) {
            Ok(_) => to.counters.rx(len - VNET_HDR_LEN),
            Err(_) => to.counters.dropped(DropReason::QueueFull),
        }
    }

    /// A frame the kernel could not keep for the socket `rx` reads.
    fn lost(&self, rx: &Rx<'_>) {
        match rx.from {
            Some(i) => rx.plan.slaves[i].counters.dropped(DropReason::QueueFull),
            None => {
                self.master_counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends what `out` holds and counts the outcome.
    fn flush(&self, plan: &Plan, out: &mut Batch<'_, '_>) {
        if out.is_empty() {
            return;
        }
        out.flush(&self.master, |tag, len, sent| {
            let len = len - VNET_HDR_LEN;
            let counters = |i: u32| &plan.slaves[i as usize].counters;
            match (tag & TO_WIRE != 0, sent) {
                (false, true) => counters(tag).rx(len),
                (false, false) => counters(tag).dropped(DropReason::QueueFull),
                (true, true) => {}
                (true, false) if tag & !TO_WIRE == FROM_WIRE => {
                    self.master_counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                (true, false) => counters(tag & !TO_WIRE).dropped(DropReason::QueueFull),
            }
        });
    }

    /// Queues `whole` for device `ifindex`, sending the batch first if it is full.
    fn queue<'d>(
        &self,
        plan: &Plan,
        out: &mut Batch<'_, 'd>,
        ifindex: u32,
        whole: &'d [u8],
        tag: u32,
    ) {
        if !out.push(ifindex, whole, tag) {
            self.flush(plan, out);
            out.push(ifindex, whole, tag);
        }
    }

    fn switch<'d>(
        &self,
        rx: &Rx<'_>,
        whole: &'d [u8],
        out: &mut Batch<'_, 'd>,
        scratch: &mut [u8],
    ) {
        let plan = rx.plan;
        let frame = whole.get(VNET_HDR_LEN..).unwrap_or(&[]);
        let sender = rx.from.map(|i| &*plan.slaves[i].counters);
        if let Some(c) = sender {
            c.tx(frame.len());
        } else {
            self.master_counters
                .rx_frames
                .fetch_add(1, Ordering::Relaxed);
        }
        let blame = |why: DropReason| match sender {
            Some(c) => c.dropped(why),
            None => {
                self.master_counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        };
        let to_wire = TO_WIRE | rx.from.map_or(FROM_WIRE, slave_tag);
        let wire = self.master.ifindex();
        match decide(&plan.snap, rx.ingress, frame) {
            Decision::Pass => {}
            // Unicast the kernel backend already switched: this is the tap's copy.
            Decision::ToSlave(_) | Decision::ToWire
                if plan.kernel && frame.first().is_some_and(|b| b & 1 == 0) => {}
            Decision::ToSlave(id) => match plan.position(id) {
                Some(i) => {
                    let to = plan.slaves[i].sock.ifindex();
                    self.queue(plan, out, to, whole, slave_tag(i));
                }
                None => blame(DropReason::Other),
            },
            Decision::ToWire => self.queue(plan, out, wire, whole, to_wire),
            Decision::Flood {
                origin,
                to_wire: wire_too,
            } => {
                let Ok(eth) = ethernet::Frame::new_checked(frame) else {
                    return;
                };
                for id in plan.snap.flood_targets(origin, eth.dst()) {
                    if let Some(i) = plan.position(id) {
                        let to = plan.slaves[i].sock.ifindex();
                        self.queue(plan, out, to, whole, slave_tag(i));
                    }
                }
                if wire_too {
                    self.queue(plan, out, wire, whole, to_wire);
                }
            }
            // With host access the host end's stack has it (see `guard::add_host_access`).
            Decision::ToMasterStack if plan.snap.host_access => {}
            Decision::ToMasterStack => blame(DropReason::NoOwner),
            Decision::Route => match (&self.raw, VnetHdr::parse(whole)) {
                (Some(raw), Ok(hdr)) => {
                    let mut failed = false;
                    match gso::segment(frame, &hdr, scratch, |pkt| {
                        failed |= raw.send(pkt).is_err();
                    }) {
                        Ok(_) if failed => blame(DropReason::NoRoute),
                        Ok(_) => {}
                        Err(_) => blame(DropReason::Malformed),
                    }
                }
                (None, _) => blame(DropReason::NoOwner),
                (_, Err(_)) => blame(DropReason::Malformed),
            },
            Decision::Drop(why) => blame(why),
        }
    }
}

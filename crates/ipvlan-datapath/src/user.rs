//! The user-space backend: one switching thread per port.
//!
//! It reads frames from the master's packet socket and from every host end's, asks
//! [`ipvlan_core::decide`] what to do, and writes them where the decision says. Frames
//! keep their virtio-net header end to end, so GSO super-frames are switched whole.
//! One buffer serves every frame: nothing is allocated, locked or copied per frame.
//! Sockets are served round-robin, a bounded batch at a time, so a slave that floods
//! cannot starve the others.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipvlan_core::wire::gso;
use ipvlan_core::wire::vnet::VnetHdr;
use ipvlan_core::{Decision, DropReason, Ingress, SlaveId, decide};
use ipvlan_sys::nfqueue::{NfQueue, QueuedPacket, Verdict};
use ipvlan_sys::packet::{MAX_FRAME, PacketSocket, VNET_HDR_LEN};
use ipvlan_sys::raw::RawSender;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::counters::DropKind;
use crate::{Plan, PlanSlave};

const WAKER: Token = Token(0);
const MASTER: Token = Token(1);
const QUEUE: Token = Token(usize::MAX);
/// Frames read from one socket before the next socket gets its turn.
const BATCH: usize = 64;

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
    /// L3/L3S egress (routed in the master's namespace).
    pub fn start(
        master: Arc<PacketSocket>,
        raw: Option<RawSender>,
        plan: Plan,
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
            buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
            scratch: vec![0u8; gso::SCRATCH_LEN].into_boxed_slice(),
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
    /// The frame being switched.
    buf: Box<[u8]>,
    /// Where super-frames are cut into packets for the raw sockets.
    scratch: Box<[u8]>,
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
        while !self.stop.load(Ordering::Relaxed) {
            let timeout = if ready.is_empty() {
                Some(Duration::from_millis(500))
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
            ready.retain(|&t| self.serve(t));
        }
    }

    /// Serves up to [`BATCH`] frames from one socket; false once it is empty or gone.
    fn serve(&mut self, token: Token) -> bool {
        let plan = self.current.clone();
        if token == QUEUE {
            return self.serve_queue(&plan);
        }
        let (ingress, idx) = if token == MASTER {
            (Ingress::Master, None)
        } else {
            let id = SlaveId((token.0 - 2) as u16);
            match plan.position(id) {
                Some(i) => (Ingress::Slave(id), Some(i)),
                None => return false,
            }
        };
        for _ in 0..BATCH {
            let sock = match idx {
                None => &self.io.master,
                Some(i) => &*plan.slaves[i].sock,
            };
            let n = match sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ENETDOWN while a device is down is expected; the socket stays bound.
                    tracing::debug!("recv on ifindex {}: {e}", sock.ifindex());
                    return false;
                }
            };
            self.io
                .switch(&plan, ingress, idx, &self.buf[..n], &mut self.scratch);
        }
        true
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

impl Io {
    fn deliver_queued(&self, plan: &Plan, p: &QueuedPacket<'_>, scratch: &mut [u8]) {
        let ip = p.payload;
        let (dst, ethertype, l4_off, proto) = match ip.first().map(|b| b >> 4) {
            Some(4) if ip.len() >= 20 => {
                let d: [u8; 4] = ip[16..20].try_into().expect("length checked");
                (
                    IpAddr::from(d),
                    0x0800u16,
                    usize::from(ip[0] & 0x0f) * 4,
                    ip[9],
                )
            }
            Some(6) if ip.len() >= 40 => {
                let d: [u8; 16] = ip[24..40].try_into().expect("length checked");
                (IpAddr::from(d), 0x86dd, 40, ip[6])
            }
            _ => return,
        };
        let Some(i) = plan.snap.table.owner(&dst).and_then(|id| plan.position(id)) else {
            return;
        };
        let to = &plan.slaves[i];
        let len = VNET_HDR_LEN + 14 + ip.len();
        if len > scratch.len() {
            to.counters.dropped(DropKind::Malformed);
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
                hdr.csum_start = (14 + l4_off) as u16;
                hdr.csum_offset = csum_offset;
            }
        }
        if hdr.emit(&mut scratch[..VNET_HDR_LEN]).is_err() {
            return;
        }
        let master = plan.snap.master_mac;
        let f = &mut scratch[VNET_HDR_LEN..len];
        f[0..6].copy_from_slice(&master);
        f[6..12].copy_from_slice(&p.hwaddr.unwrap_or(master));
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f[14..].copy_from_slice(ip);
        match to.sock.send(&scratch[..len]) {
            Ok(_) => to.counters.rx(len - VNET_HDR_LEN),
            Err(_) => to.counters.dropped(DropKind::QueueFull),
        }
    }

    fn switch(
        &self,
        plan: &Plan,
        ingress: Ingress,
        from: Option<usize>,
        whole: &[u8],
        scratch: &mut [u8],
    ) {
        let frame = whole.get(VNET_HDR_LEN..).unwrap_or(&[]);
        let sender = from.map(|i| &*plan.slaves[i].counters);
        if let Some(c) = sender {
            c.tx(frame.len());
        } else {
            self.master_counters
                .rx_frames
                .fetch_add(1, Ordering::Relaxed);
        }
        let blame = |why: DropKind| match sender {
            Some(c) => c.dropped(why),
            None => {
                self.master_counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        };
        // A slave sending with a source MAC that is not the master's (which it carries)
        // is forging it: such frames never leave, in either backend (the kernel driver
        // does not police this; ipvlan-rs does, issue 5).
        if sender.is_some()
            && frame
                .get(6..12)
                .is_some_and(|src| src != plan.snap.master_mac)
        {
            blame(DropKind::Spoof);
            return;
        }
        match decide(&plan.snap, ingress, frame) {
            Decision::Pass => {}
            // Unicast the kernel backend already switched: this is the tap's copy.
            Decision::ToSlave(_) | Decision::ToWire
                if plan.kernel && frame.first().is_some_and(|b| b & 1 == 0) => {}
            Decision::ToSlave(id) => match plan.position(id) {
                Some(i) => self.deliver(&plan.slaves[i], whole),
                None => blame(DropKind::Other),
            },
            Decision::ToWire => {
                if self.master.send(whole).is_err() {
                    blame(DropKind::QueueFull);
                }
            }
            Decision::Flood { origin, to_wire } => {
                let dst: [u8; 6] = frame[..6].try_into().expect("decide checked the length");
                for s in &plan.snap.slaves {
                    if Some(s.id) == origin || !s.up || !s.mc.accepts(&dst) {
                        continue;
                    }
                    if let Some(i) = plan.position(s.id) {
                        self.deliver(&plan.slaves[i], whole);
                    }
                }
                if to_wire && self.master.send(whole).is_err() {
                    blame(DropKind::QueueFull);
                }
            }
            Decision::ToMasterStack => blame(DropKind::NoOwner),
            Decision::Route => match (&self.raw, VnetHdr::parse(whole)) {
                (Some(raw), Ok(hdr)) => {
                    let mut failed = false;
                    match gso::segment(frame, &hdr, scratch, |pkt| {
                        failed |= raw.send(pkt).is_err();
                    }) {
                        Ok(_) if failed => blame(DropKind::NoRoute),
                        Ok(_) => {}
                        Err(_) => blame(DropKind::Malformed),
                    }
                }
                (None, _) => blame(DropKind::NoOwner),
                (_, Err(_)) => blame(DropKind::Malformed),
            },
            Decision::Drop(why) => blame(match why {
                DropReason::Private => DropKind::Private,
                DropReason::Runt | DropReason::Malformed => DropKind::Malformed,
                DropReason::L3Multicast | DropReason::NotIp => DropKind::L3Filtered,
                DropReason::SourceGuard => DropKind::SourceGuard,
                _ => DropKind::Other,
            }),
        }
    }

    fn deliver(&self, to: &PlanSlave, whole: &[u8]) {
        match to.sock.send(whole) {
            Ok(_) => to.counters.rx(whole.len() - VNET_HDR_LEN),
            Err(_) => to.counters.dropped(DropKind::QueueFull),
        }
    }
}

//! AF_PACKET sockets bound to one device, with virtio-net headers.
//!
//! Every frame read or written is preceded by a 10-byte `struct virtio_net_hdr`, so GSO
//! super-frames and partial checksums pass through whole. The socket ignores the
//! device's own transmissions (`PACKET_IGNORE_OUTGOING`): what a device sends is not
//! something it received. It is non-blocking; callers poll it.
//!
//! A socket opened with [`PacketSocket::open_ring`] receives into a `TPACKET_V2` ring
//! shared with the kernel, read without a system call per frame ([`RingReader`]). Its
//! slots hold any frame up to a 1500-byte MTU; a longer one (a GSO super-frame) keeps
//! its slot, marked [`RxFrame::Queued`], and waits whole, with its virtio-net header, in
//! the socket's receive queue, in order, for [`PacketSocket::recv`]
//! (`PACKET_COPY_THRESH`). The kernel writes the virtio-net header into ring slots as it
//! does for `recv` (`tpacket_rcv`, since Linux 4.1). [`SendBatch`] sends many frames,
//! to any devices of the namespace, with one `sendmmsg`. What the socket could not
//! keep is counted by the kernel: [`PacketSocket::take_stats`].

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::sock::{abi_u16, cvt, ifindex_c, setsockopt_int, socklen_of};

/// Length of the virtio-net header that prefixes every frame.
pub const VNET_HDR_LEN: usize = 10;

/// Size of a buffer that holds any frame this socket can return: the header plus a
/// 64 KiB GSO super-frame.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65536 + 14;

/// Bytes per ring slot: the slot header, the virtio-net header and a 1514-byte frame fit.
const SLOT: u32 = 2048;
/// Ring memory is allocated in blocks of one page (order-0 pages never fail).
const RING_BLOCK: u32 = 4096;

/// What a [`PacketSocket`] is given to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    All,
    /// Frames whose destination MAC has the group bit (broadcast and multicast).
    MulticastOnly,
    Nothing,
}

#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    ring: Option<Ring>,
}

/// Counters the kernel keeps per packet socket, reset by every read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// Frames accepted by the filter (the dropped ones included).
    pub packets: u32,
    /// Frames lost because the ring or the receive buffer was full.
    pub drops: u32,
}

impl PacketSocket {
    /// Opens a socket on device `ifindex` of the calling thread's namespace; frames are
    /// read with [`recv`](Self::recv).
    pub fn open(ifindex: u32) -> io::Result<Self> {
        Self::open_with(ifindex, 0)
    }

    /// Opens a socket on device `ifindex` that receives into a ring of `slots` 2 KiB
    /// slots (rounded up to a multiple of 2; [`reader`](Self::reader)), set up before
    /// the socket is bound so that no frame waits anywhere else; none if `slots` is 0.
    pub fn open_ring(ifindex: u32, slots: u32) -> io::Result<Self> {
        Self::open_with(ifindex, slots.next_multiple_of(2))
    }

    fn open_with(ifindex: u32, slots: u32) -> io::Result<Self> {
        // Protocol 0 at creation: no frame is queued before `bind` names the device.
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
        setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)?;
        // Large buffers absorb bursts; SO_*BUFFORCE ignores the sysctl caps as root.
        let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
        let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20);
        let ring = match slots {
            0 => None,
            n => Some(Ring::new(&fd, n)?),
        };

        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = const { abi_u16(libc::AF_PACKET) };
        sll.sll_protocol = const { abi_u16(libc::ETH_P_ALL) }.to_be();
        sll.sll_ifindex = ifindex_c(ifindex)?;
        // SAFETY: `sll` is a valid sockaddr_ll and the length is its size.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                socklen_of::<libc::sockaddr_ll>(),
            )
        })?;
        Ok(Self { fd, ifindex, ring })
    }

    /// The socket's ring, for one reader at a time: `None` without a ring, or while
    /// another reader holds it.
    pub fn reader(&self) -> Option<RingReader<'_>> {
        let ring = self.ring.as_ref()?;
        if ring.claimed.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(RingReader {
            ring,
            head: ring.head.load(Ordering::Relaxed),
            held: Cell::new(0),
        })
    }

    /// Whether the socket receives into a ring.
    pub fn has_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Reads and resets the kernel's counters for this socket (`PACKET_STATISTICS`).
    pub fn take_stats(&self) -> io::Result<PacketStats> {
        // The V3 layout starts with the V1/V2 one; the kernel copies what applies.
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = socklen_of::<libc::tpacket_stats_v3>();
        // SAFETY: `st` is writable for `len` bytes and `len` is a valid in/out length.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        })?;
        Ok(PacketStats {
            packets: st.tp_packets,
            drops: st.tp_drops,
        })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Which frames the kernel copies to this socket (a classic BPF socket filter).
    pub fn set_filter(&self, filter: Filter) -> io::Result<()> {
        const ACCEPT: u32 = 0x0004_0000; // bytes to keep: any frame, super-frames too
        let ins = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
            code: u16::try_from(code).expect("a classic BPF opcode fits 16 bits"),
            jt,
            jf,
            k,
        };
        let prog: Vec<libc::sock_filter> = match filter {
            Filter::All => vec![ins(libc::BPF_RET | libc::BPF_K, 0, 0, ACCEPT)],
            Filter::Nothing => vec![ins(libc::BPF_RET | libc::BPF_K, 0, 0, 0)],
            // ldb [0]; jset #1 (the group bit of the destination MAC); accept : drop
            Filter::MulticastOnly => vec![
                ins(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 0),
                ins(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, 0, 1, 1),
                ins(libc::BPF_RET | libc::BPF_K, 0, 0, ACCEPT),
                ins(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
            ],
        };
        let fprog = libc::sock_fprog {
            len: u16::try_from(prog.len()).expect("at most four instructions"),
            filter: prog.as_ptr().cast_mut(),
        };
        // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies
        // the program and validates it before attaching.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                socklen_of::<libc::sock_fprog>(),
            )
        })
        .map(drop)
    }

    /// Which frames the kernel copies to this socket: an eBPF socket filter, in place
    /// of any filter before.
    pub fn set_bpf_filter(&self, prog: &crate::bpf::Prog) -> io::Result<()> {
        setsockopt_int(
            &self.fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_BPF,
            prog.raw_fd(),
        )
    }

    /// Reads one frame (virtio-net header first) into `buf`; `WouldBlock` when none.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n.unsigned_abs();
        if n > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame larger than the buffer",
            ));
        }
        Ok(n)
    }

    /// Transmits one frame (virtio-net header first) on the device.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is valid for reads of `frame.len()` bytes for the whole call.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A `TPACKET_V2` receive ring mapped into this process.
#[derive(Debug)]
struct Ring {
    map: NonNull<u8>,
    slots: u32,
    /// The first slot not yet handed back to the kernel.
    head: AtomicU32,
    /// A [`RingReader`] exists.
    claimed: AtomicBool,
}

// SAFETY: the mapping is plain shared memory. Slot headers' status words are only ever
// accessed atomically; a slot's other bytes are only read through a `RingReader`, of
// which there is at most one at a time (`claimed`), while the kernel has handed that
// slot to user space and does not write it.
unsafe impl Send for Ring {}
// SAFETY: as above; shared references only reach the mapping through the claim.
unsafe impl Sync for Ring {}

impl Ring {
    fn new(fd: &OwnedFd, slots: u32) -> io::Result<Self> {
        let version = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_VERSION, version)?;
        // Frames longer than a slot are queued whole for `recv` as well.
        setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, 1)?;
        let per_block = RING_BLOCK / SLOT;
        let req = libc::tpacket_req {
            tp_block_size: RING_BLOCK,
            tp_block_nr: slots / per_block,
            tp_frame_size: SLOT,
            tp_frame_nr: slots,
        };
        // SAFETY: `req` is a valid tpacket_req and the length passed is its size.
        cvt(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_RX_RING,
                (&req as *const libc::tpacket_req).cast(),
                socklen_of::<libc::tpacket_req>(),
            )
        })?;
        let len = slots as usize * SLOT as usize;
        // SAFETY: maps the ring just configured on `fd`, `len` bytes, at an address the
        // kernel chooses; the result is checked before use.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            map: NonNull::new(map.cast()).expect("mmap succeeded"),
            slots,
            head: AtomicU32::new(0),
            claimed: AtomicBool::new(false),
        })
    }

    fn slot(&self, i: u32) -> *mut u8 {
        let i = (i % self.slots) as usize;
        // SAFETY: `i < slots`, so the offset stays inside the `slots * SLOT` mapping.
        unsafe { self.map.as_ptr().add(i * SLOT as usize) }
    }

    /// The status word at the start of slot `i`, shared with the kernel.
    fn status(&self, i: u32) -> &AtomicU32 {
        // SAFETY: every slot starts with the u32 `tp_status` of a tpacket2_hdr, 16-byte
        // aligned (SLOT is), inside the mapping, which lives as long as `self`; the
        // kernel and this process only ever access it as a whole word.
        unsafe { AtomicU32::from_ptr(self.slot(i).cast()) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `new`; no reader borrows it any
        // more (a reader borrows the socket that owns `self`).
        unsafe {
            libc::munmap(
                self.map.as_ptr().cast(),
                self.slots as usize * SLOT as usize,
            )
        };
    }
}

/// A frame in a ring slot.
#[derive(Debug)]
pub enum RxFrame<'r> {
    /// The whole frame, virtio-net header first.
    Whole(&'r [u8]),
    /// Longer than a slot: the kernel queued it whole; [`PacketSocket::recv`] returns
    /// it (the queued frames come in slot order).
    Queued,
    /// Longer than a slot, and the socket's receive buffer was full: lost.
    Lost,
}

/// The one reader of a socket's ring. Frames returned by [`next`](Self::next) stay
/// valid until [`release`](Self::release) (or drop) hands their slots back.
pub struct RingReader<'s> {
    ring: &'s Ring,
    /// First slot not yet handed back.
    head: u32,
    /// Slots read and not yet handed back.
    held: Cell<u32>,
}

impl RingReader<'_> {
    /// The next frame the kernel has filled, if any.
    pub fn next(&self) -> Option<RxFrame<'_>> {
        let held = self.held.get();
        if held == self.ring.slots {
            return None; // every slot is held by this reader
        }
        let i = (self.head + held) % self.ring.slots;
        let status = self.ring.status(i).load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        self.held.set(held + 1);
        let slot = self.ring.slot(i);
        // SAFETY: the kernel handed this slot over (TP_STATUS_USER, acquired above) and
        // leaves it alone until `release`, which needs `&mut self`, so no frame borrowed
        // from `&self` outlives that; the slot is SLOT bytes and starts with a
        // tpacket2_hdr.
        let (hdr, bytes) = unsafe {
            (
                slot.cast::<libc::tpacket2_hdr>().read(),
                std::slice::from_raw_parts(slot.cast_const(), SLOT as usize),
            )
        };
        let mac = usize::from(hdr.tp_mac);
        let (len, snap) = (hdr.tp_len as usize, hdr.tp_snaplen as usize);
        let frame = mac
            .checked_sub(VNET_HDR_LEN)
            .and_then(|start| bytes.get(start..mac + snap));
        Some(match frame {
            Some(f) if snap == len => RxFrame::Whole(f),
            _ if status & libc::TP_STATUS_COPY != 0 => RxFrame::Queued,
            _ => RxFrame::Lost,
        })
    }

    /// Hands every slot read so far back to the kernel.
    pub fn release(&mut self) {
        for _ in 0..self.held.replace(0) {
            self.ring
                .status(self.head)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.head = (self.head + 1) % self.ring.slots;
        }
        self.ring.head.store(self.head, Ordering::Relaxed);
    }
}

impl Drop for RingReader<'_> {
    fn drop(&mut self) {
        self.release();
        self.ring.claimed.store(false, Ordering::Release);
    }
}

/// Room for frames to send with one `sendmmsg`, each to its own device. Reused batch
/// after batch: [`start`](Self::start) fills it for the span of one borrow.
pub struct SendBatch {
    msgs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_ll]>,
    tags: Box<[u32]>,
    sent: Box<[bool]>,
    len: usize,
}

// SAFETY: the pointers inside `msgs` and `iovs` are only set and used within one
// `Batch` borrow (which is not Send) and are stale, never dereferenced, outside it.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("capacity", &self.tags.len())
            .finish()
    }
}

impl SendBatch {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // SAFETY: mmsghdr, iovec and sockaddr_ll are plain old data; all-zero (null
        // pointers, zero lengths) is a valid value for each.
        let (msg, iov, addr) = unsafe {
            (
                std::mem::zeroed::<libc::mmsghdr>(),
                std::mem::zeroed::<libc::iovec>(),
                std::mem::zeroed::<libc::sockaddr_ll>(),
            )
        };
        Self {
            msgs: vec![msg; capacity].into(),
            iovs: vec![iov; capacity].into(),
            addrs: vec![addr; capacity].into(),
            tags: vec![0; capacity].into(),
            sent: vec![false; capacity].into(),
            len: 0,
        }
    }

    /// A batch of frames that live for `'d`.
    pub fn start<'d>(&mut self) -> Batch<'_, 'd> {
        self.len = 0;
        Batch {
            b: self,
            _frames: PhantomData,
        }
    }
}

/// Frames queued for one `sendmmsg`; [`flush`](Self::flush) sends them.
pub struct Batch<'b, 'd> {
    b: &'b mut SendBatch,
    _frames: PhantomData<*const &'d [u8]>,
}

impl<'d> Batch<'_, 'd> {
    pub fn is_full(&self) -> bool {
        self.b.len == self.b.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.b.len == 0
    }

    /// Queues `frame` (virtio-net header first) for device `ifindex`, with a `tag` the
    /// caller gets back from [`flush`](Self::flush); false if the batch is full.
    pub fn push(&mut self, ifindex: u32, frame: &'d [u8], tag: u32) -> bool {
        let b = &mut *self.b;
        if b.len == b.tags.len() {
            return false;
        }
        let i = b.len;
        b.iovs[i] = libc::iovec {
            iov_base: frame.as_ptr().cast_mut().cast(),
            iov_len: frame.len(),
        };
        let a = &mut b.addrs[i];
        a.sll_family = const { abi_u16(libc::AF_PACKET) };
        a.sll_protocol = const { abi_u16(libc::ETH_P_ALL) }.to_be();
        // No device has index 0: a frame for an index out of the kernel's range fails
        // to send (ENXIO) and is reported as not sent.
        a.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
        b.tags[i] = tag;
        b.len += 1;
        true
    }

    /// Sends every queued frame through `sock` (any packet socket of the namespace) and
    /// calls `done(tag, frame length, sent)` for each, in order; the batch is then empty.
    pub fn flush(&mut self, sock: &PacketSocket, mut done: impl FnMut(u32, usize, bool)) {
        let b = &mut *self.b;
        let n = b.len;
        for i in 0..n {
            let m = &mut b.msgs[i];
            m.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_ll).cast();
            m.msg_hdr.msg_namelen = socklen_of::<libc::sockaddr_ll>();
            m.msg_hdr.msg_iov = &mut b.iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_len = 0;
        }
        let mut at = 0;
        while at < n {
            // SAFETY: `msgs[at..n]` are initialised above; each points at its own
            // sockaddr_ll and iovec in this batch, and every iovec at a frame borrowed
            // for 'd, which outlives this call.
            let r = unsafe {
                libc::sendmmsg(
                    sock.fd.as_raw_fd(),
                    b.msgs[at..n].as_mut_ptr(),
                    // The kernel sends at most UIO_MAXIOV at a time anyway.
                    libc::c_uint::try_from(n - at).unwrap_or(libc::c_uint::MAX),
                    libc::MSG_DONTWAIT,
                )
            };
            match r {
                // The first frame failed: it is lost; carry on with the next one.
                r if r <= 0 => {
                    if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    b.sent[at] = false;
                    at += 1;
                }
                k => {
                    let k = k.unsigned_abs() as usize;
                    b.sent[at..at + k].fill(true);
                    at += k;
                }
            }
        }
        for i in 0..n {
            done(b.tags[i], b.iovs[i].iov_len, b.sent[i]);
        }
        b.len = 0;
    }
}

impl Drop for Batch<'_, '_> {
    fn drop(&mut self) {
        self.b.len = 0;
    }
}

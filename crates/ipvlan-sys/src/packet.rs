//! AF_PACKET sockets bound to one device, with virtio-net headers.
//!
//! Every frame read or written is preceded by a 10-byte `struct virtio_net_hdr`, so GSO
//! super-frames and partial checksums pass through whole. The socket ignores the
//! device's own transmissions (`PACKET_IGNORE_OUTGOING`): what a device sends is not
//! something it received. It is non-blocking; callers poll it.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::sock::{cvt, setsockopt_int};

/// Length of the virtio-net header that prefixes every frame.
pub const VNET_HDR_LEN: usize = 10;

/// Size of a buffer that holds any frame this socket can return: the header plus a
/// 64 KiB GSO super-frame.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65536 + 14;

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
}

impl PacketSocket {
    /// Opens a socket on device `ifindex` of the calling thread's namespace.
    pub fn open(ifindex: u32) -> io::Result<Self> {
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

        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and the length is its size.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(Self { fd, ifindex })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Which frames the kernel copies to this socket (a classic BPF socket filter).
    pub fn set_filter(&self, filter: Filter) -> io::Result<()> {
        const ACCEPT: u32 = 0x0004_0000; // bytes to keep: any frame, super-frames too
        let ins = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
            code: code as u16,
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
            len: prog.len() as u16,
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
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        })
        .map(drop)
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
        let n = n as usize;
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
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
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

//! eBPF over `bpf(2)`: hash maps, `sched_cls` programs and their `tcx` ingress
//! attachments, for the kernel backend's fast path (`ipvlan_core::fastpath`).
//!
//! A program attached with `BPF_PROG_ATTACH` (not a link) stays attached when the
//! process that attached it exits, with the maps it uses: the fast path keeps switching
//! while the daemon is down, and the next daemon finds it by name
//! ([`tcx_ingress_named`]) and replaces it.
//!
//! Attachments are made in the calling thread's network namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sock::fd_u32;

const MAP_CREATE: libc::c_long = 0;
const MAP_UPDATE_ELEM: libc::c_long = 2;
const MAP_DELETE_ELEM: libc::c_long = 3;
const PROG_LOAD: libc::c_long = 5;
const PROG_ATTACH: libc::c_long = 8;
const PROG_DETACH: libc::c_long = 9;
const PROG_GET_FD_BY_ID: libc::c_long = 13;
const OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const PROG_QUERY: libc::c_long = 16;

const MAP_TYPE_HASH: u32 = 1;
const F_NO_PREALLOC: u32 = 1;
const PROG_TYPE_SOCKET_FILTER: u32 = 1;
const PROG_TYPE_SCHED_CLS: u32 = 3;
const ATTACH_TCX_INGRESS: u32 = 46;
const F_REPLACE: u32 = 1 << 2;

/// `union bpf_attr`, zeroed, written field by field at the kernel's offsets.
#[repr(C, align(8))]
struct Attr([u8; ATTR_SIZE as usize]);

const ATTR_SIZE: u32 = 128;

impl Attr {
    fn new() -> Self {
        Self([0; ATTR_SIZE as usize])
    }

    fn u32(mut self, off: usize, v: u32) -> Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn fd(self, off: usize, fd: &impl AsRawFd) -> Self {
        self.u32(off, fd_u32(fd.as_raw_fd()))
    }

    fn u64(mut self, off: usize, v: u64) -> Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn name(mut self, off: usize, name: &str) -> Self {
        let n = name.len().min(15);
        self.0[off..off + n].copy_from_slice(&name.as_bytes()[..n]);
        self
    }

    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
}

fn ptr<T>(p: *const T) -> u64 {
    p as usize as u64
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` of the size passed, whose pointer
    // fields (set by the callers) point at buffers that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), ATTR_SIZE) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn bpf_fd(cmd: libc::c_long, attr: &mut Attr) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf(2) returned no descriptor"))?;
    // SAFETY: these commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A BPF hash map.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    /// A hash map of up to `max` entries, allocated as entries are added.
    pub fn hash(name: &str, key_size: usize, value_size: usize, max: u32) -> io::Result<Self> {
        let size = |n: usize| {
            u32::try_from(n).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "a map key or value over 4 GiB")
            })
        };
        let mut a = Attr::new()
            .u32(0, MAP_TYPE_HASH)
            .u32(4, size(key_size)?)
            .u32(8, size(value_size)?)
            .u32(12, max)
            .u32(16, F_NO_PREALLOC)
            .name(28, name);
        Ok(Self {
            fd: bpf_fd(MAP_CREATE, &mut a)?,
            key_size,
            value_size,
        })
    }

    /// The descriptor a program names the map by.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Adds or replaces `key`'s value.
    pub fn set(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.sizes(key, Some(value))?;
        let mut a = Attr::new()
            .fd(0, &self.fd)
            .u64(8, ptr(key.as_ptr()))
            .u64(16, ptr(value.as_ptr()));
        bpf(MAP_UPDATE_ELEM, &mut a).map(drop)
    }

    /// Removes `key`; one that is not there is no error.
    pub fn remove(&self, key: &[u8]) -> io::Result<()> {
        self.sizes(key, None)?;
        let mut a = Attr::new().fd(0, &self.fd).u64(8, ptr(key.as_ptr()));
        match bpf(MAP_DELETE_ELEM, &mut a) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r.map(drop),
        }
    }

    fn sizes(&self, key: &[u8], value: Option<&[u8]>) -> io::Result<()> {
        if key.len() != self.key_size || value.is_some_and(|v| v.len() != self.value_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a map entry is {} bytes of key and {} of value",
                    self.key_size, self.value_size
                ),
            ));
        }
        Ok(())
    }
}

/// A loaded `sched_cls` program.
#[derive(Debug)]
pub struct Prog {
    fd: OwnedFd,
}

impl Prog {
    /// Loads `insns` (encoded `struct bpf_insn`s) as the `sched_cls` program `name`. A
    /// program the verifier refuses is an error carrying the end of the verifier's log.
    pub fn load_sched_cls(name: &str, insns: &[[u8; 8]]) -> io::Result<Self> {
        Self::load(PROG_TYPE_SCHED_CLS, name, insns)
    }

    /// Loads `insns` as the socket filter `name` (see
    /// [`crate::packet::PacketSocket::set_bpf_filter`]).
    pub fn load_socket_filter(name: &str, insns: &[[u8; 8]]) -> io::Result<Self> {
        Self::load(PROG_TYPE_SOCKET_FILTER, name, insns)
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    fn load(prog_type: u32, name: &str, insns: &[[u8; 8]]) -> io::Result<Self> {
        let license = c"Dual MIT/GPL";
        let count = u32::try_from(insns.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a BPF program over 2^32 instructions",
            )
        })?;
        let load = |log: &mut [u8], level: u32| {
            let log_len = u32::try_from(log.len()).expect("the log buffer is 64 KiB");
            let mut a = Attr::new()
                .u32(0, prog_type)
                .u32(4, count)
                .u64(8, ptr(insns.as_ptr()))
                .u64(16, ptr(license.as_ptr()))
                .u32(24, level)
                .u32(28, log_len)
                // No buffer, no pointer: the kernel refuses a pointer of length 0.
                .u64(
                    32,
                    if log.is_empty() {
                        0
                    } else {
                        ptr(log.as_mut_ptr())
                    },
                )
                .name(48, name);
            bpf_fd(PROG_LOAD, &mut a)
        };
        match load(&mut [], 0) {
            Ok(fd) => Ok(Self { fd }),
            Err(e) => {
                let mut log = vec![0u8; 1 << 16];
                let _ = load(&mut log, 1);
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let tail: Vec<&str> = text.lines().rev().take(4).collect();
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "the kernel refused BPF program {name} ({e}): {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                ))
            }
        }
    }

    /// Attaches the program to `ifindex`'s tcx ingress, in place of `replace` if given
    /// (atomically), else after what is there.
    pub fn attach_tcx_ingress(&self, ifindex: u32, replace: Option<&Prog>) -> io::Result<()> {
        let mut a = Attr::new()
            .u32(0, ifindex)
            .fd(4, &self.fd)
            .u32(8, ATTACH_TCX_INGRESS);
        if let Some(old) = replace {
            a = a.u32(12, F_REPLACE).fd(16, &old.fd);
        }
        bpf(PROG_ATTACH, &mut a).map(drop)
    }

    /// Detaches the program from `ifindex`'s tcx ingress.
    pub fn detach_tcx_ingress(&self, ifindex: u32) -> io::Result<()> {
        let mut a = Attr::new()
            .u32(0, ifindex)
            .fd(4, &self.fd)
            .u32(8, ATTACH_TCX_INGRESS);
        bpf(PROG_DETACH, &mut a).map(drop)
    }

    fn by_id(id: u32) -> io::Result<Self> {
        let mut a = Attr::new().u32(0, id);
        Ok(Self {
            fd: bpf_fd(PROG_GET_FD_BY_ID, &mut a)?,
        })
    }

    /// The name the program was loaded with.
    pub fn name(&self) -> io::Result<String> {
        // `struct bpf_prog_info` up to and including its name.
        let mut info = [0u8; 80];
        let mut a = Attr::new()
            .fd(0, &self.fd)
            .u32(4, u32::try_from(info.len()).expect("80 bytes"))
            .u64(8, ptr(info.as_mut_ptr()));
        bpf(OBJ_GET_INFO_BY_FD, &mut a)?;
        let name = &info[64..80];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Ok(String::from_utf8_lossy(&name[..end]).into_owned())
    }
}

/// The programs on `ifindex`'s tcx ingress whose name `pick` accepts.
pub fn tcx_ingress_named(ifindex: u32, pick: impl Fn(&str) -> bool) -> io::Result<Vec<Prog>> {
    let mut ids = [0u32; 64];
    let mut a = Attr::new()
        .u32(0, ifindex)
        .u32(4, ATTACH_TCX_INGRESS)
        .u64(16, ptr(ids.as_mut_ptr()))
        .u32(24, u32::try_from(ids.len()).expect("64 ids"));
    bpf(PROG_QUERY, &mut a)?;
    let n = (a.get_u32(24) as usize).min(ids.len());
    let mut out = Vec::new();
    for &id in &ids[..n] {
        // A program detached meanwhile is simply not there any more.
        if let Ok(p) = Prog::by_id(id)
            && p.name().is_ok_and(|n| pick(&n))
        {
            out.push(p);
        }
    }
    Ok(out)
}

//! Network namespaces held as file descriptors.
//!
//! A namespace is identified by the (device, inode) of its nsfs file: two descriptors
//! refer to the same namespace exactly when their keys are equal. Work inside another
//! namespace runs on a short-lived thread that `setns`es first, so no long-lived thread
//! ever changes namespace; sockets created there stay bound to that namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

/// Identity of a network namespace: the nsfs inode (and its device).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsKey {
    pub dev: u64,
    pub ino: u64,
}

impl std::fmt::Display for NsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    key: NsKey,
}

impl NetNs {
    /// The namespace of the calling thread.
    pub fn current() -> io::Result<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// Opens a namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`, ...).
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let file = File::open(path)?;
        Self::from_fd(file.into())
    }

    /// Takes ownership of a descriptor that must refer to a network namespace.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let meta = File::from(fd.try_clone()?).metadata()?;
        // nsfs files have this magic filesystem; `setns` later checks the type anyway.
        let key = NsKey {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        Ok(Self { fd, key })
    }

    pub fn key(&self) -> NsKey {
        self.key
    }

    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            fd: self.fd.try_clone()?,
            key: self.key,
        })
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("thread inside the namespace panicked"))?
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Names of the namespaces under `/run/netns` (as `ip netns` lists them), by key.
pub fn named_namespaces() -> Vec<(String, NsKey)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return out;
    };
    for entry in dir.flatten() {
        if let Ok(meta) = std::fs::metadata(entry.path()) {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                NsKey {
                    dev: meta.dev(),
                    ino: meta.ino(),
                },
            ));
        }
    }
    out.sort();
    out
}

/// Every network namespace reachable from `/run/netns` and `/proc/*/ns/net`, one
/// descriptor each with the path it was opened from, for callers that must find a
/// namespace by another property (its id in some other namespace).
pub fn all_namespaces() -> Vec<(std::path::PathBuf, NetNs)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut paths: Vec<std::path::PathBuf> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        paths.extend(dir.flatten().map(|e| e.path()));
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                paths.push(e.path().join("ns/net"));
            }
        }
    }
    for p in paths {
        // stat first: cheap, and avoids opening the same namespace many times.
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        let key = NsKey {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if !seen.insert(key) {
            continue;
        }
        if let Ok(ns) = NetNs::open(&p) {
            out.push((p, ns));
        }
    }
    out
}

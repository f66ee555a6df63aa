//! Network namespaces held as file descriptors.
//!
//! A namespace is identified by the (device, inode) of its nsfs file: two descriptors
//! refer to the same namespace exactly when their keys are equal. Work inside another
//! namespace runs on a short-lived thread that `setns`es first, so no long-lived thread
//! ever changes namespace; sockets created there stay bound to that namespace.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// The directory `ip netns` keeps its namespaces in.
pub const NAMED_DIR: &str = "/run/netns";

/// Hears a named namespace go: `ip netns del` unmounts and unlinks its file in
/// [`NAMED_DIR`]. Readable (edge-triggered for mio) when something there was removed.
pub struct NamedWatch {
    inotify: nix::sys::inotify::Inotify,
}

impl NamedWatch {
    /// Watches [`NAMED_DIR`]; fails while it does not exist (no `ip netns add` yet).
    pub fn open() -> io::Result<Self> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            NAMED_DIR,
            AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_ONLYDIR,
        )?;
        Ok(Self { inotify })
    }

    /// Reads every pending event; true if there was one.
    pub fn drain(&self) -> bool {
        let mut any = false;
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            any = true;
        }
        any
    }
}

impl AsFd for NamedWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}

impl AsRawFd for NamedWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.inotify.as_fd().as_raw_fd()
    }
}

/// Which of `keys` something outside this process still holds, as far as `/proc` shows:
/// a task of another process in it, an nsfs mount of it in any process's mount
/// namespace (`ip netns add`, container runtimes), or another process's open descriptor
/// of it. What is not held here is kept alive by this process alone (its sockets and
/// descriptors) and would be destroyed if this process let go. Not seen: processes in
/// a PID namespace this process cannot see into, and sockets another process made
/// there; the cheaper checks run first and the descriptor scan only for what is left.
pub fn held_elsewhere(keys: &[NsKey]) -> std::collections::HashSet<NsKey> {
    use std::collections::HashSet;
    let mut held = HashSet::new();
    let wanted = |held: &HashSet<NsKey>| keys.iter().any(|k| !held.contains(k));
    let key_of = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| NsKey {
            dev: m.dev(),
            ino: m.ino(),
        })
    };
    let me = std::process::id().to_string();
    let pids: Vec<PathBuf> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.bytes().all(|b| b.is_ascii_digit()) && name != me.as_str()
        })
        .map(|e| e.path())
        .collect();
    let mut mount_nss: HashMap<NsKey, PathBuf> = HashMap::new();
    if let Some(own) = key_of(Path::new("/proc/self/ns/mnt")) {
        mount_nss.insert(own, PathBuf::from("/proc/self"));
    }
    for pid in &pids {
        if let Some(k) = key_of(&pid.join("ns/net"))
            && keys.contains(&k)
        {
            held.insert(k);
        }
        if let Some(m) = key_of(&pid.join("ns/mnt")) {
            mount_nss.entry(m).or_insert_with(|| pid.clone());
        }
    }
    if !wanted(&held) {
        return held;
    }
    for pid in mount_nss.values() {
        let Ok(info) = std::fs::read_to_string(pid.join("mountinfo")) else {
            continue;
        };
        for ino in info.lines().filter_map(nsfs_mount_of) {
            if let Some(k) = keys.iter().find(|k| k.ino == ino) {
                held.insert(*k);
            }
        }
    }
    if !wanted(&held) {
        return held;
    }
    // Threads that entered a namespace of their own (`setns` on one thread).
    for pid in &pids {
        for task in std::fs::read_dir(pid.join("task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(k) = key_of(&task.path().join("ns/net"))
                && keys.contains(&k)
            {
                held.insert(k);
            }
        }
    }
    if !wanted(&held) {
        return held;
    }
    for pid in &pids {
        for fd in std::fs::read_dir(pid.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(ino) = net_inode(&target.to_string_lossy())
                && let Some(k) = keys.iter().find(|k| k.ino == ino)
            {
                held.insert(*k);
            }
        }
    }
    held
}

/// `net:[4026531840]` → its inode.
fn net_inode(s: &str) -> Option<u64> {
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The namespace inode of a `mountinfo` line that mounts a network namespace file.
fn nsfs_mount_of(line: &str) -> Option<u64> {
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
    let (head, tail) = line.split_once(" - ")?;
    if tail.split(' ').next()? != "nsfs" {
        return None;
    }
    net_inode(head.split(' ').nth(3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsfs_mounts_are_read_from_mountinfo() {
        let line = "612 29 0:4 net:[4026532310] /run/netns/a rw shared:284 - nsfs nsfs rw";
        assert_eq!(nsfs_mount_of(line), Some(4_026_532_310));
        let other = "30 1 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw,mode=755";
        assert_eq!(nsfs_mount_of(other), None);
        let mnt = "613 29 0:4 mnt:[4026532311] /run/x rw - nsfs nsfs rw";
        assert_eq!(nsfs_mount_of(mnt), None);
    }
}

//! Unix-socket helpers for the control socket: passing a descriptor with a message,
//! and the peer's credentials.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, getsockopt, recvmsg, sendmsg, sockopt,
};

/// Sends `data` with `fd` attached; returns how many bytes of `data` went.
pub fn send_with_fd(stream: &UnixStream, data: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    Ok(sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(data)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )?)
}

/// Receives into `buf`, with the first descriptor that came along (others are closed).
pub fn recv_with_fd(stream: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut first = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel installed this descriptor for this process just now
                // and nothing else refers to it, so taking ownership is sound.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if first.is_none() {
                    first = Some(owned);
                }
            }
        }
    }
    Ok((msg.bytes, first))
}

/// The peer's (pid, uid) as the kernel recorded them at connect time.
pub fn peer_cred(stream: &UnixStream) -> io::Result<(i32, u32)> {
    let c = getsockopt(stream, sockopt::PeerCredentials)?;
    Ok((c.pid(), c.uid()))
}

/// Whether process `pid` holds CAP_NET_ADMIN in its effective set.
pub fn has_net_admin(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

/// Whether process `pid` is in the caller's user namespace (its capabilities mean the
/// same thing here).
pub fn same_user_ns(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    match (
        ino(&format!("/proc/{pid}/ns/user")),
        ino("/proc/self/ns/user"),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The listening socket a service manager handed this process (socket activation:
/// `LISTEN_PID` is this process and `LISTEN_FDS` at least 1, the socket is descriptor
/// 3), if it did and descriptor 3 is a listening Unix stream socket. Taken once: a
/// second call finds nothing.
pub fn activated_listener() -> io::Result<Option<std::os::unix::net::UnixListener>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    const FIRST: std::os::fd::RawFd = 3;
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    if !for_us || count == 0 || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    // SAFETY: under the socket-activation protocol the service manager passes this
    // process descriptor 3 open, and nothing else in this process owns it; `TAKEN`
    // makes sure it is wrapped once.
    let fd = unsafe { OwnedFd::from_raw_fd(FIRST) };
    let kind = getsockopt(&fd, sockopt::SockType)?;
    let listening = getsockopt(&fd, sockopt::AcceptConn)?;
    let unix = nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(fd.as_raw_fd()).is_ok();
    if kind != nix::sys::socket::SockType::Stream || !listening || !unix {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket the service manager passed is no listening Unix stream socket",
        ));
    }
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(Some(std::os::unix::net::UnixListener::from(fd)))
}

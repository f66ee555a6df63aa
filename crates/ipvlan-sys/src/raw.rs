//! Raw IP sockets for the L3/L3S egress path: "route in the master's namespace with the
//! master as output device".
//!
//! A [`RawSender`] holds one IPv4 and one IPv6 `SOCK_RAW`/`IPPROTO_RAW` socket, opened in
//! the master's namespace. The IPv4 one is bound to the master device
//! (`SO_BINDTOIFINDEX`). The IPv6 one is not: a bound socket makes the kernel's route
//! lookup insist on the device, where the driver's (`ip6_route_output` with the master as
//! output interface and the packet's source) takes it only as a preference for global
//! destinations (spec §4.2), so that a blackhole or a route through another device
//! applies; every packet carries the master and its own source in `IPV6_PKTINFO`
//! instead (the socket is `IPV6_TRANSPARENT`, so any source is accepted). A packet
//! handed to [`RawSender::send`] carries its own IP header (`IPPROTO_RAW` implies
//! `IP_HDRINCL`, and on IPv6 the equivalent); the kernel routes it by its destination with
//! the bound device as output interface, resolves the next hop's MAC on the master,
//! runs the namespace's OUTPUT and POSTROUTING hooks (the packet carries `SO_MARK`, so
//! a ruleset can recognise it) and transmits it with the master's MAC as source.
//!
//! Kernel behaviour worth knowing (net/ipv4/raw.c, net/ipv6/raw.c):
//! * IPv4: the kernel rewrites `tot_len` and the header checksum, and fills in a zero
//!   `id` and a zero source address; everything else is sent as given.
//! * Neither family fragments a header-included packet: one larger than the output
//!   device's MTU fails with `EMSGSIZE`, whatever its DF bit. Callers that need
//!   fragmentation (IPv4 with DF clear) must fragment before calling `send`.
//! * Neither socket receives anything (`IPPROTO_RAW` matches no incoming protocol).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use std::io::IoSlice;

use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn, SockaddrIn6, sendmsg, sendto};

use crate::sock::{cvt, setsockopt_int};

/// Sends header-included IPv4 and IPv6 packets out of one device.
#[derive(Debug)]
pub struct RawSender {
    v4: OwnedFd,
    /// `None` when the namespace has IPv6 disabled at build or boot time.
    v6: Option<OwnedFd>,
    ifindex: u32,
}

/// Opens one raw socket of `family`, bound to `ifindex`, with `mark`.
fn open_one(family: libc::c_int, ifindex: u32, mark: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    })?;
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if family == libc::AF_INET {
        // Implied by IPPROTO_RAW; stated so that it does not depend on that rule.
        setsockopt_int(&fd, libc::IPPROTO_IP, libc::IP_HDRINCL, 1)?;
        setsockopt_int(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTOIFINDEX,
            ifindex as libc::c_int,
        )?;
    } else {
        setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT, 1)?;
    }
    setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_MARK, mark as libc::c_int)?;
    // Room for bursts; SO_SNDBUFFORCE ignores the sysctl cap as root.
    let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20);
    // Nothing is ever read from these sockets.
    let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 0);
    Ok(fd)
}

impl RawSender {
    /// Opens the sockets on device `master_ifindex` of the calling thread's namespace;
    /// every packet sent carries `mark` (`SO_MARK`).
    pub fn open(master_ifindex: u32, mark: u32) -> io::Result<Self> {
        let v4 = open_one(libc::AF_INET, master_ifindex, mark)?;
        let v6 = match open_one(libc::AF_INET6, master_ifindex, mark) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => None,
            Err(e) => return Err(e),
        };
        Ok(Self {
            v4,
            v6,
            ifindex: master_ifindex,
        })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sends one IP packet (header included); the version nibble chooses the socket.
    ///
    /// Errors are the kernel's (`EMSGSIZE` above the device MTU, `ENETUNREACH`,
    /// `EPERM` when netfilter drops it in OUTPUT, `EAGAIN`/`ENOBUFS` when the send
    /// buffer is full, ...); a packet too short to hold its header, or of an unknown
    /// version, is `InvalidInput`.
    pub fn send(&self, ip_packet: &[u8]) -> io::Result<()> {
        let n = match destination(ip_packet)? {
            IpAddr::V4(dst) => sendto(
                self.v4.as_raw_fd(),
                ip_packet,
                &SockaddrIn::from(sockaddr_v4(dst)),
                MsgFlags::MSG_DONTWAIT,
            )?,
            IpAddr::V6(dst) => {
                let fd = self.v6.as_ref().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::Unsupported,
                        "IPv6 is not available in this namespace",
                    )
                })?;
                let src: [u8; 16] = ip_packet[8..24].try_into().expect("checked length");
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr { s6_addr: src },
                    ipi6_ifindex: self.ifindex,
                };
                let to = SockaddrIn6::from(sockaddr_v6(dst, self.ifindex));
                sendmsg(
                    fd.as_raw_fd(),
                    &[IoSlice::new(ip_packet)],
                    &[ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::MSG_DONTWAIT,
                    Some(&to),
                )?
            }
        };
        if n == ip_packet.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "raw socket sent part of a packet",
            ))
        }
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The destination address in an IPv4 or IPv6 header.
pub fn destination(ip_packet: &[u8]) -> io::Result<IpAddr> {
    match ip_packet.first().map(|b| b >> 4) {
        Some(4) => {
            let d: [u8; 4] = ip_packet
                .get(16..20)
                .filter(|_| ip_packet.len() >= 20)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| invalid("IPv4 packet shorter than its header"))?;
            Ok(IpAddr::V4(Ipv4Addr::from(d)))
        }
        Some(6) => {
            if ip_packet.len() < 40 {
                return Err(invalid("IPv6 packet shorter than its header"));
            }
            let d: [u8; 16] = ip_packet[24..40]
                .try_into()
                .map_err(|_| invalid("IPv6 packet shorter than its header"))?;
            Ok(IpAddr::V6(Ipv6Addr::from(d)))
        }
        Some(_) => Err(invalid("not an IPv4 or IPv6 packet")),
        None => Err(invalid("empty packet")),
    }
}

/// The `sendto` address for an IPv4 destination: port 0.
fn sockaddr_v4(dst: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(dst, 0)
}

/// Whether an IPv6 address is only meaningful together with an interface: link-local
/// unicast (fe80::/10) and interface- or link-local multicast.
fn needs_scope(a: &Ipv6Addr) -> bool {
    let o = a.octets();
    let link_local_unicast = o[0] == 0xfe && o[1] & 0xc0 == 0x80;
    let small_scope_multicast = o[0] == 0xff && matches!(o[1] & 0x0f, 1 | 2);
    link_local_unicast || small_scope_multicast
}

/// The `sendto` address for an IPv6 destination: port 0, and the device as scope for
/// scoped destinations.
fn sockaddr_v6(dst: Ipv6Addr, ifindex: u32) -> SocketAddrV6 {
    let scope = if needs_scope(&dst) { ifindex } else { 0 };
    SocketAddrV6::new(dst, 0, 0, scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_header(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[12..16].copy_from_slice(&src.octets());
        h[16..20].copy_from_slice(&dst.octets());
        h
    }

    #[test]
    fn extracts_ipv4_destination() {
        let h = v4_header(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(
            destination(&h).unwrap(),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
        );
        assert_eq!(
            destination(&h[..19]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn extracts_ipv6_destination() {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        let d: Ipv6Addr = "2001:db8::42".parse().unwrap();
        h[24..40].copy_from_slice(&d.octets());
        assert_eq!(destination(&h).unwrap(), IpAddr::V6(d));
        assert_eq!(
            destination(&h[..39]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn rejects_other_versions_and_empty() {
        assert_eq!(
            destination(&[0x55; 40]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            destination(&[]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn scope_only_for_scoped_destinations() {
        let s = |a: &str| sockaddr_v6(a.parse().unwrap(), 9).scope_id();
        assert_eq!(s("fe80::1"), 9);
        assert_eq!(s("febf::1"), 9);
        assert_eq!(s("ff02::1"), 9);
        assert_eq!(s("ff01::1"), 9);
        assert_eq!(s("fec0::1"), 0);
        assert_eq!(s("2001:db8::1"), 0);
        assert_eq!(s("ff05::1"), 0);
        assert_eq!(sockaddr_v4(Ipv4Addr::LOCALHOST).port(), 0);
    }
}

/// Root-only tests: a scratch namespace with a veth pair.
#[cfg(test)]
mod root_tests {
    use super::*;
    use crate::NetNs;
    use std::net::UdpSocket;
    use std::process::Command;
    use std::time::Duration;

    struct Ns(String);

    impl Ns {
        fn new(tag: &str) -> Self {
            assert!(
                nix::unistd::geteuid().is_root(),
                "this test needs root: it creates a network namespace (run as root)"
            );
            let name = format!("ipvl-{tag}-{}", std::process::id());
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(std::process::Stdio::null())
                .status();
            sh(&["ip", "netns", "add", &name]);
            Ns(name)
        }
        fn ip(&self, args: &[&str]) {
            let mut v = vec!["ip", "-n", &self.0];
            v.extend_from_slice(args);
            sh(&v);
        }
        fn open(&self) -> NetNs {
            NetNs::open(format!("/run/netns/{}", self.0)).unwrap()
        }
    }

    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn sh(args: &[&str]) {
        let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(st.success(), "{args:?} failed");
    }

    fn csum_fold(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn sum16(data: &[u8]) -> u32 {
        data.chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum()
    }

    fn udp(src_port: u16, dst_port: u16, payload: &[u8], pseudo: &[u8]) -> Vec<u8> {
        let len = (8 + payload.len()) as u16;
        let mut u = Vec::new();
        u.extend_from_slice(&src_port.to_be_bytes());
        u.extend_from_slice(&dst_port.to_be_bytes());
        u.extend_from_slice(&len.to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        let mut ck = csum_fold(sum16(pseudo) + sum16(&u));
        if ck == 0 {
            ck = 0xffff;
        }
        u[6..8].copy_from_slice(&ck.to_be_bytes());
        u
    }

    fn udp4(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        let ulen = (8 + payload.len()) as u16;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&ulen.to_be_bytes());
        let u = udp(40000, dport, payload, &pseudo);
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&(20 + ulen).to_be_bytes());
        h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        h[8] = 64;
        h[9] = 17;
        h[12..16].copy_from_slice(&src.octets());
        h[16..20].copy_from_slice(&dst.octets());
        let ck = csum_fold(sum16(&h));
        h[10..12].copy_from_slice(&ck.to_be_bytes());
        h.extend_from_slice(&u);
        h
    }

    fn udp6(src: Ipv6Addr, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        let ulen = (8 + payload.len()) as u16;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&u32::from(ulen).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        let u = udp(40000, dport, payload, &pseudo);
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&ulen.to_be_bytes());
        h[6] = 17;
        h[7] = 64;
        h[8..24].copy_from_slice(&src.octets());
        h[24..40].copy_from_slice(&dst.octets());
        h.extend_from_slice(&u);
        h
    }

    fn ifindex(name: &str) -> u32 {
        let c = std::ffi::CString::new(name).unwrap();
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
        assert_ne!(i, 0, "no device {name}");
        i
    }

    fn recv_within(sock: &UdpSocket) -> Vec<u8> {
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf).expect("datagram did not arrive");
        buf[..n].to_vec()
    }

    #[test]
    fn raw_sender_reaches_the_peer_over_veth() {
        // va in `a`, vb in `b`: the packet can only arrive by leaving through va.
        let a = Ns::new("rawa");
        let b = Ns::new("rawb");
        a.ip(&[
            "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b.0,
        ]);
        a.ip(&["addr", "add", "10.77.0.1/24", "dev", "va"]);
        b.ip(&["addr", "add", "10.77.0.2/24", "dev", "vb"]);
        a.ip(&["addr", "add", "fd77::1/64", "dev", "va", "nodad"]);
        b.ip(&["addr", "add", "fd77::2/64", "dev", "vb", "nodad"]);
        a.ip(&["link", "set", "va", "up"]);
        b.ip(&["link", "set", "vb", "up"]);
        // Our mark is visible to netfilter: drop marked packets to port 9003.
        sh(&[
            "ip",
            "netns",
            "exec",
            &a.0,
            "nft",
            "add table ip t; \
             add chain ip t o { type filter hook output priority 0; }; \
             add rule ip t o meta mark 0x1234 udp dport 9003 drop",
        ]);
        let (rx4, rx6) = b
            .open()
            .run(|| {
                (
                    UdpSocket::bind("10.77.0.2:9001").unwrap(),
                    UdpSocket::bind("[fd77::2]:9002").unwrap(),
                )
            })
            .unwrap();
        let (dropped, emsgsize) = a
            .open()
            .run(|| {
                let va = ifindex("va");
                let tx = RawSender::open(va, 0x1234).unwrap();
                assert_eq!(tx.ifindex(), va);
                tx.send(&udp4(
                    Ipv4Addr::new(10, 77, 0, 1),
                    Ipv4Addr::new(10, 77, 0, 2),
                    9001,
                    b"hello v4",
                ))
                .unwrap();
                tx.send(&udp6(
                    "fd77::1".parse().unwrap(),
                    "fd77::2".parse().unwrap(),
                    9002,
                    b"hello v6",
                ))
                .unwrap();
                let dropped = tx
                    .send(&udp4(
                        Ipv4Addr::new(10, 77, 0, 1),
                        Ipv4Addr::new(10, 77, 0, 2),
                        9003,
                        b"x",
                    ))
                    .err()
                    .and_then(|e| e.raw_os_error());
                // Larger than the MTU with DF clear: header-included packets are not
                // fragmented by the kernel.
                let big = udp4(
                    Ipv4Addr::new(10, 77, 0, 1),
                    Ipv4Addr::new(10, 77, 0, 2),
                    9001,
                    &[7u8; 2000],
                );
                let e = tx.send(&big).err().and_then(|e| e.raw_os_error());
                let short = tx.send(&[0x45, 0, 0]).unwrap_err().kind();
                assert_eq!(short, io::ErrorKind::InvalidInput);
                (dropped, e)
            })
            .unwrap();
        assert_eq!(recv_within(&rx4), b"hello v4");
        assert_eq!(recv_within(&rx6), b"hello v6");
        assert_eq!(dropped, Some(libc::EPERM), "netfilter should see our mark");
        assert_eq!(emsgsize, Some(libc::EMSGSIZE));
    }
}

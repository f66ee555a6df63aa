//! A minimal NFQUEUE client (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_QUEUE`), for
//! the L3S ingress path.
//!
//! [`NfQueue::open`] binds one queue number in the calling thread's namespace (the
//! socket stays bound there), in copy-packet mode with the whole packet copied
//! (`copy_range` 0xffff) and `NFQA_CFG_F_GSO` cleared, so the kernel segments GSO
//! super-packets before queueing them: nfqueue does not say their segment size, and a
//! packet handed to a slave must fit its MTU. Their checksum may still be partial (see
//! [`QueuedPacket::csum_not_ready`]).
//!
//! Every queued packet waits in the kernel until it gets a verdict ([`NfQueue::verdict`])
//! or the socket is closed (then the queue is unbound and its packets are dropped). When
//! no socket is bound to a queue, packets sent to it are dropped (no fail-open).
//!
//! Open the queue before installing the rule that queues to it. Nftables' `queue`
//! statement needs the `nft_queue` module; iptables' `-j NFQUEUE` (also through
//! iptables-nft, via `xt_NFQUEUE`) feeds the same queues.
//!
//! Messages are [`NfMessage`]s on a [`Socket<Nfnetlink>`]: nfgenmsg {family, version
//! 0, res_id = queue number}, then attributes whose values are big-endian. Queued
//! packets are read in place ([`frames`]), never copied.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use netlink_packet_core::{NLM_F_ACK, NLMSG_ERROR};
use nix::sys::socket::{setsockopt, sockopt};

use crate::netlink::{Frames, NFGENMSG_LEN, NfMessage, Nfnetlink, Socket, attrs, frames};
use crate::sock::abi_u8;

/// A buffer of this size holds any datagram the queue sends: a 64 KiB packet copy
/// plus its headers and attributes.
pub const RECV_BUF: usize = 0x10000 + 4096;

/// Netfilter hook numbers (`QueuedPacket::hook`).
pub const HOOK_PRE_ROUTING: u8 = 0;
pub const HOOK_LOCAL_IN: u8 = 1;
pub const HOOK_FORWARD: u8 = 2;
pub const HOOK_LOCAL_OUT: u8 = 3;
pub const HOOK_POST_ROUTING: u8 = 4;

/// `NFQA_SKB_INFO` bits (`QueuedPacket::skb_info`).
pub const SKB_CSUMNOTREADY: u32 = 1;
pub const SKB_GSO: u32 = 2;
pub const SKB_CSUM_NOTVERIFIED: u32 = 4;

const NFNL_SUBSYS_QUEUE: u8 = 3;
const NFQNL_MSG_PACKET: u8 = 0;
const NFQNL_MSG_VERDICT: u8 = 1;
const NFQNL_MSG_CONFIG: u8 = 2;
const NFQNL_MSG_VERDICT_BATCH: u8 = 3;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_IFINDEX_INDEV: u16 = 5;
const NFQA_IFINDEX_OUTDEV: u16 = 6;
const NFQA_HWADDR: u16 = 9;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_SKB_INFO: u16 = 14;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_GSO: u32 = 4;

/// Packets the kernel holds for this queue before it drops new ones.
pub const QUEUE_MAXLEN: u32 = 4096;

/// What happens to a queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// NF_DROP.
    Drop,
    /// NF_ACCEPT: the packet continues through the stack after this hook.
    Accept,
}

impl Verdict {
    fn code(self) -> u32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
        }
    }
}

/// One packet handed to userspace; borrows the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuedPacket<'a> {
    /// Protocol family of the hook (`AF_INET`, `AF_INET6`, ...).
    pub family: u8,
    /// Identifier to pass to [`NfQueue::verdict`].
    pub id: u32,
    /// Ethertype of the packet (host order).
    pub hw_protocol: u16,
    /// Netfilter hook the packet was queued from (`HOOK_*`).
    pub hook: u8,
    /// The packet's mark (0 when it has none).
    pub mark: u32,
    pub indev: Option<u32>,
    pub outdev: Option<u32>,
    /// Source link-layer address, when the packet has a 6-byte one.
    pub hwaddr: Option<[u8; 6]>,
    /// `SKB_*` bits.
    pub skb_info: u32,
    /// The packet's real length when `payload` was truncated to the copy range.
    pub orig_len: Option<u32>,
    /// The IP packet, network header first.
    pub payload: &'a [u8],
}

impl QueuedPacket<'_> {
    /// The L4 checksum is partial (a locally generated packet or a GSO one).
    pub fn csum_not_ready(&self) -> bool {
        self.skb_info & SKB_CSUMNOTREADY != 0
    }

    /// A GSO super-packet, larger than the MTU; segmentation is the caller's job.
    pub fn is_gso(&self) -> bool {
        self.skb_info & SKB_GSO != 0
    }
}

/// A bound NFQUEUE queue.
#[derive(Debug)]
pub struct NfQueue {
    sock: Socket<Nfnetlink>,
    queue: u16,
}

fn msg_type(msg: u8) -> u16 {
    (u16::from(NFNL_SUBSYS_QUEUE) << 8) | u16::from(msg)
}

/// The one configuration request: bind, copy mode, GSO flag, queue length.
fn config_request(queue: u16) -> NfMessage {
    // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode; } __packed
    let mut params = [0u8; 5];
    params[0..4].copy_from_slice(&0xffffu32.to_be_bytes());
    params[4] = NFQNL_COPY_PACKET;
    NfMessage::new(
        NFNL_SUBSYS_QUEUE,
        NFQNL_MSG_CONFIG,
        const { abi_u8(libc::AF_UNSPEC) },
        queue,
    )
    // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; } — pf is unused by
    // BIND (and PF_BIND is a no-op since Linux 3.8).
    .attr(NFQA_CFG_CMD, [NFQNL_CFG_CMD_BIND, 0, 0, 0])
    .attr(NFQA_CFG_PARAMS, params)
    .attr(NFQA_CFG_QUEUE_MAXLEN, QUEUE_MAXLEN.to_be_bytes())
    .attr(NFQA_CFG_FLAGS, 0u32.to_be_bytes())
    .attr(NFQA_CFG_MASK, NFQA_CFG_F_GSO.to_be_bytes())
}

/// A verdict message (`batch`: for every packet with an id up to `id`).
fn verdict_request(queue: u16, id: u32, verdict: Verdict, batch: bool) -> NfMessage {
    let msg = if batch {
        NFQNL_MSG_VERDICT_BATCH
    } else {
        NFQNL_MSG_VERDICT
    };
    // struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id; }
    let mut hdr = [0u8; 8];
    hdr[0..4].copy_from_slice(&verdict.code().to_be_bytes());
    hdr[4..8].copy_from_slice(&id.to_be_bytes());
    NfMessage::new(
        NFNL_SUBSYS_QUEUE,
        msg,
        const { abi_u8(libc::AF_UNSPEC) },
        queue,
    )
    .attr(NFQA_VERDICT_HDR, hdr)
}

fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// Parses the body (after the nlmsghdr) of an NFQNL_MSG_PACKET message.
fn parse_packet(body: &[u8]) -> io::Result<QueuedPacket<'_>> {
    if body.len() < NFGENMSG_LEN {
        return Err(bad("queued-packet message without nfgenmsg"));
    }
    let mut p = QueuedPacket {
        family: body[0],
        id: 0,
        hw_protocol: 0,
        hook: 0,
        mark: 0,
        indev: None,
        outdev: None,
        hwaddr: None,
        skb_info: 0,
        orig_len: None,
        payload: &[],
    };
    let mut have_hdr = false;
    for (ty, v) in attrs(&body[NFGENMSG_LEN..]) {
        match ty {
            NFQA_PACKET_HDR if v.len() >= 7 => {
                // struct nfqnl_msg_packet_hdr { be32 id; be16 hw_protocol; u8 hook; }
                p.id = be32(v).unwrap_or(0);
                p.hw_protocol = u16::from_be_bytes([v[4], v[5]]);
                p.hook = v[6];
                have_hdr = true;
            }
            NFQA_MARK => p.mark = be32(v).unwrap_or(0),
            NFQA_IFINDEX_INDEV => p.indev = be32(v),
            NFQA_IFINDEX_OUTDEV => p.outdev = be32(v),
            // struct nfqnl_msg_packet_hw { be16 len; u16 pad; u8 addr[8]; }
            NFQA_HWADDR if v.len() >= 10 && u16::from_be_bytes([v[0], v[1]]) == 6 => {
                p.hwaddr = v[4..10].try_into().ok();
            }
            NFQA_PAYLOAD => p.payload = v,
            NFQA_CAP_LEN => p.orig_len = be32(v),
            NFQA_SKB_INFO => p.skb_info = be32(v).unwrap_or(0),
            _ => {}
        }
    }
    if have_hdr {
        Ok(p)
    } else {
        Err(bad("queued-packet message without NFQA_PACKET_HDR"))
    }
}

/// The queued packets of one datagram, in order.
///
/// Acknowledgements are skipped; an error message (a verdict the kernel refused, for
/// instance one for an unknown id) is yielded as the OS error it carries, and
/// iteration continues after it.
#[derive(Debug)]
pub struct Packets<'a> {
    frames: Frames<'a>,
}

impl<'a> Packets<'a> {
    fn new(datagram: &'a [u8]) -> Self {
        Self {
            frames: frames(datagram),
        }
    }
}

impl<'a> Iterator for Packets<'a> {
    type Item = io::Result<QueuedPacket<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let frame = match self.frames.next()? {
                Ok(f) => f,
                Err(e) => return Some(Err(e.into())),
            };
            if frame.message_type() == NLMSG_ERROR {
                if let Some(Err(e)) = frame.status() {
                    return Some(Err(e.into()));
                }
            } else if frame.message_type() == msg_type(NFQNL_MSG_PACKET) {
                return Some(parse_packet(frame.payload()));
            }
        }
    }
}

impl NfQueue {
    /// Binds queue `queue_num` in the calling thread's namespace. Fails with `EPERM`
    /// when another socket has it, or without CAP_NET_ADMIN.
    pub fn open(queue_num: u16) -> io::Result<Self> {
        let sock = Socket::open()?;
        // Room for bursts of full-size copies; the FORCE variant ignores rmem_max.
        if setsockopt(&sock, sockopt::RcvBufForce, &(8 << 20)).is_err() {
            let _ = setsockopt(&sock, sockopt::RcvBuf, &(8 << 20));
        }
        // A full socket buffer drops packets in the kernel; without this it would
        // also make the next recv fail with ENOBUFS.
        sock.inner().set_no_enobufs(true)?;

        let q = Self {
            sock,
            queue: queue_num,
        };
        // The request is handled synchronously, so its answer is already queued when
        // send returns; the socket is still blocking here.
        const SEQ: u32 = 1;
        q.sock.send(config_request(queue_num), NLM_F_ACK, SEQ)?;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let n = q.sock.recv_into(&mut buf)?;
            for frame in frames(&buf[..n.min(buf.len())]).map_while(Result::ok) {
                if frame.seq() == SEQ
                    && let Some(status) = frame.status()
                {
                    status?;
                    q.sock.inner().set_non_blocking(true)?;
                    return Ok(q);
                }
                // A packet queued between the bind and its acknowledgement: drop it,
                // as the kernel would have with nobody bound.
                if frame.message_type() == msg_type(NFQNL_MSG_PACKET)
                    && let Ok(p) = parse_packet(frame.payload())
                {
                    let _ = q.verdict(p.id, Verdict::Drop);
                }
            }
        }
    }

    pub fn queue_num(&self) -> u16 {
        self.queue
    }

    /// Reads one datagram into `buf` (at least [`RECV_BUF`] bytes for a full-size
    /// packet) and returns the packets in it; `None` when nothing is waiting.
    pub fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<Option<Packets<'b>>> {
        let n = match self.sock.recv_into(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        if n > buf.len() {
            return Err(bad("netlink datagram larger than the buffer"));
        }
        Ok(Some(Packets::new(&buf[..n])))
    }

    /// Gives packet `id` its verdict.
    pub fn verdict(&self, id: u32, verdict: Verdict) -> io::Result<()> {
        // Sequence number 0: no answer is asked for.
        self.sock
            .send(verdict_request(self.queue, id, verdict, false), 0, 0)
    }

    /// Gives every packet still waiting with an id up to `id` the same verdict.
    pub fn verdict_batch(&self, id: u32, verdict: Verdict) -> io::Result<()> {
        self.sock
            .send(verdict_request(self.queue, id, verdict, true), 0, 0)
    }
}

impl AsFd for NfQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for NfQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{NLMSG_HDRLEN, align, encode};
    use netlink_packet_core::NLM_F_REQUEST;

    fn packet_msg(id: u32, payload: &[u8]) -> Vec<u8> {
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(HOOK_PRE_ROUTING);
        let mut hw = 6u16.to_be_bytes().to_vec();
        hw.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 9, 0, 0]);
        let msg = NfMessage::new(
            NFNL_SUBSYS_QUEUE,
            NFQNL_MSG_PACKET,
            const { abi_u8(libc::AF_INET) },
            5,
        )
        .attr(NFQA_PACKET_HDR, hdr)
        .attr(NFQA_MARK, 0xabcdu32.to_be_bytes())
        .attr(NFQA_IFINDEX_INDEV, 7u32.to_be_bytes())
        .attr(NFQA_HWADDR, hw)
        .attr(NFQA_SKB_INFO, SKB_GSO.to_be_bytes())
        .attr(NFQA_PAYLOAD, payload);
        let mut m = encode(msg, 0, 0);
        // Flag bits in the type are ignored: NLA_F_NET_BYTEORDER on the payload.
        let at = m.len() - align(4 + payload.len());
        let ty = u16::from_ne_bytes([m[at + 2], m[at + 3]]) | 0x4000;
        m[at + 2..at + 4].copy_from_slice(&ty.to_ne_bytes());
        m
    }

    fn error_msg(code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(
            &u32::try_from(NLMSG_HDRLEN + 4 + NLMSG_HDRLEN)
                .unwrap()
                .to_ne_bytes(),
        );
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        m
    }

    #[test]
    fn parses_packets_and_errors_of_one_datagram() {
        let mut d = packet_msg(41, b"abc");
        d.extend(error_msg(0));
        d.extend(error_msg(-libc::ENOENT));
        d.extend(packet_msg(42, b"defgh"));
        let all: Vec<_> = Packets::new(&d).collect();
        assert_eq!(all.len(), 3);
        let p = all[0].as_ref().unwrap();
        assert_eq!(p.id, 41);
        assert_eq!(p.family, const { abi_u8(libc::AF_INET) });
        assert_eq!(p.hw_protocol, 0x0800);
        assert_eq!(p.hook, HOOK_PRE_ROUTING);
        assert_eq!(p.mark, 0xabcd);
        assert_eq!(p.indev, Some(7));
        assert_eq!(p.outdev, None);
        assert_eq!(p.hwaddr, Some([2, 0, 0, 0, 0, 9]));
        assert!(p.is_gso());
        assert!(!p.csum_not_ready());
        assert_eq!(p.payload, b"abc");
        assert_eq!(
            all[1].as_ref().unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        let p = all[2].as_ref().unwrap();
        assert_eq!((p.id, p.payload), (42, &b"defgh"[..]));
    }

    #[test]
    fn truncated_datagram_is_an_error_not_a_panic() {
        let d = packet_msg(1, b"abcdef");
        for cut in 0..d.len() {
            let _ = Packets::new(&d[..cut]).count();
        }
        assert!(Packets::new(&d[..d.len() - 1]).next().unwrap().is_err());
        let no_hdr = encode(
            NfMessage::new(NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET, 2, 5),
            0,
            0,
        );
        assert!(Packets::new(&no_hdr).next().unwrap().is_err());
    }

    #[test]
    fn builds_config_and_verdict_messages() {
        let m = encode(config_request(0x0105), NLM_F_REQUEST | NLM_F_ACK, 1);
        assert_eq!(m.len(), 16 + 4 + 8 + 12 + 8 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()),
            u32::try_from(m.len()).unwrap()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0302);
        assert_eq!(&m[18..20], &[0x01, 0x05]);
        let a: Vec<_> = attrs(&m[20..]).collect();
        assert_eq!(a[0], (NFQA_CFG_CMD, &[1u8, 0, 0, 0][..]));
        assert_eq!(a[1], (NFQA_CFG_PARAMS, &[0u8, 0, 0xff, 0xff, 2][..]));
        assert_eq!(a[2], (NFQA_CFG_QUEUE_MAXLEN, &[0u8, 0, 0x10, 0][..]));
        assert_eq!(a[3], (NFQA_CFG_FLAGS, &[0u8, 0, 0, 0][..]));
        assert_eq!(a[4], (NFQA_CFG_MASK, &[0u8, 0, 0, 4][..]));

        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 1);

        let v = encode(
            verdict_request(5, 0x01020304, Verdict::Accept, false),
            NLM_F_REQUEST,
            0,
        );
        assert_eq!(v.len(), 32);
        assert_eq!(u16::from_ne_bytes([v[4], v[5]]), 0x0301);
        assert_eq!(&v[18..20], &[0, 5]);
        let a: Vec<_> = attrs(&v[20..]).collect();
        assert_eq!(a, vec![(NFQA_VERDICT_HDR, &[0u8, 0, 0, 1, 1, 2, 3, 4][..])]);
        let v = encode(verdict_request(5, 9, Verdict::Drop, true), NLM_F_REQUEST, 0);
        assert_eq!(u16::from_ne_bytes([v[4], v[5]]), 0x0303);
        assert_eq!(&v[24..28], &[0, 0, 0, 0]);
    }
}

/// Root-only test: a scratch namespace with a rule queueing UDP to port 9999.
#[cfg(test)]
mod root_tests {
    use super::*;
    use crate::NetNs;
    use std::net::UdpSocket;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    struct Ns(String);

    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn run(args: &[&str]) -> bool {
        Command::new(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Installs "queue UDP to port 9999 on 5" in OUTPUT; says which tool managed.
    fn install_rule(ns: &str) -> &'static str {
        let nft = "add table inet q; \
             add chain inet q o { type filter hook output priority 0; }; \
             add rule inet q o udp dport 9999 queue num 5";
        if run(&["ip", "netns", "exec", ns, "nft", nft]) {
            return "nft queue";
        }
        let _ = run(&["ip", "netns", "exec", ns, "nft", "flush ruleset"]);
        if !run(&["iptables", "--version"]) {
            assert!(
                run(&["apt-get", "install", "-y", "iptables"]),
                "neither nft queue nor iptables available"
            );
        }
        let ok = run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "iptables",
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "--dport",
            "9999",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "5",
        ]);
        assert!(
            ok,
            "neither `nft ... queue` nor `iptables -j NFQUEUE` works"
        );
        "iptables -j NFQUEUE"
    }

    fn next_packet(q: &NfQueue, buf: &mut [u8]) -> (u32, u8, Option<u32>, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(p) = q.recv(buf).unwrap().and_then(|mut b| b.next()) {
                let p = p.unwrap();
                return (p.id, p.hook, p.outdev, p.payload.to_vec());
            }
            assert!(Instant::now() < deadline, "nothing arrived on the queue");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn queues_and_judges_local_udp() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: it creates a network namespace (run as root)"
        );
        let name = format!("ipvl-nfq-{}", std::process::id());
        let _ = run(&["ip", "netns", "del", &name]);
        assert!(run(&["ip", "netns", "add", &name]));
        let ns = Ns(name);
        assert!(run(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]));

        let netns = NetNs::open(format!("/run/netns/{}", ns.0)).unwrap();
        let q = netns.run(|| NfQueue::open(5)).unwrap().unwrap();
        assert_eq!(q.queue_num(), 5);
        // Another socket cannot take the same queue.
        let busy = netns.run(|| NfQueue::open(5)).unwrap().unwrap_err();
        assert_eq!(busy.raw_os_error(), Some(libc::EPERM));
        let tool = install_rule(&ns.0);
        eprintln!("queueing rule installed with: {tool}");

        let (rx, tx) = netns
            .run(|| {
                (
                    UdpSocket::bind("127.0.0.1:9999").unwrap(),
                    UdpSocket::bind("127.0.0.1:0").unwrap(),
                )
            })
            .unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = vec![0u8; RECV_BUF];
        let mut got = [0u8; 64];

        tx.send_to(b"drop me", "127.0.0.1:9999").unwrap();
        let (id, hook, outdev, payload) = next_packet(&q, &mut buf);
        assert_eq!(hook, HOOK_LOCAL_OUT);
        assert_eq!(outdev, Some(1), "lo");
        assert_eq!(payload[0] >> 4, 4);
        assert_eq!(payload[9], 17);
        assert!(payload.ends_with(b"drop me"));
        q.verdict(id, Verdict::Drop).unwrap();
        assert!(rx.recv(&mut got).is_err(), "dropped packet was delivered");

        tx.send_to(b"accept me", "127.0.0.1:9999").unwrap();
        let (id, _, _, payload) = next_packet(&q, &mut buf);
        assert!(payload.ends_with(b"accept me"));
        q.verdict(id, Verdict::Accept).unwrap();
        let n = rx
            .recv(&mut got)
            .expect("accepted packet was not delivered");
        assert_eq!(&got[..n], b"accept me");

        // A verdict for an unknown id comes back as an error on the next recv.
        q.verdict(id, Verdict::Accept).unwrap();
        let e = q
            .recv(&mut buf)
            .unwrap()
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}

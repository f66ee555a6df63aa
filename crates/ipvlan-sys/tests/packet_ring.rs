//! Packet sockets with a receive ring, on a veth pair in a scratch namespace: frames up
//! to the MTU are read in place, GSO super-frames whole (virtio-net header included)
//! through `recv`, batches go out with one `sendmmsg` to several devices, and what the
//! ring cannot hold is counted by the kernel.
//!
//! Root only: panics with a clear message otherwise.

use std::process::Command;
use std::time::{Duration, Instant};

use ipvlan_sys::NetNs;
use ipvlan_sys::packet::{MAX_FRAME, PacketSocket, RxFrame, SendBatch, VNET_HDR_LEN};

/// A named namespace with a veth pair `va` <-> `vb`, deleted when dropped.
struct Scratch {
    name: String,
    ns: NetNs,
}

impl Scratch {
    fn new(tag: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "root integration test: it builds a namespace and a veth pair; run it as root"
        );
        let name = format!("ivsys-{}-{tag}", std::process::id());
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("run ip");
            assert!(st.success(), "ip {args:?} failed");
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        ip(&["netns", "add", &name]);
        // No IPv6: the devices would send neighbour discovery of their own.
        let quiet = "net.ipv6.conf.default.disable_ipv6=1";
        ip(&["netns", "exec", &name, "sysctl", "-qw", quiet]);
        let s = Scratch {
            ns: NetNs::open(format!("/run/netns/{name}")).expect("open the namespace"),
            name: name.clone(),
        };
        ip(&[
            "-n", &name, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb",
        ]);
        ip(&["-n", &name, "link", "set", "va", "up"]);
        ip(&["-n", &name, "link", "set", "vb", "up"]);
        s
    }

    fn index(&self, dev: &str) -> u32 {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link", "show", dev])
            .output()
            .expect("run ip");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(':')
            .next()
            .unwrap()
            .trim()
            .parse()
            .expect("an ifindex")
    }

    fn open(&self, dev: &str, ring: u32) -> PacketSocket {
        let i = self.index(dev);
        self.ns
            .run(move || match ring {
                0 => PacketSocket::open(i),
                n => PacketSocket::open_ring(i, n),
            })
            .expect("enter the namespace")
            .expect("open a packet socket")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// An Ethernet frame of `len` bytes (local experimental ethertype), tagged with `tag`,
/// behind a virtio-net header that asks for nothing.
fn small(len: usize, tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN + len];
    let e = &mut f[VNET_HDR_LEN..];
    e[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
    e[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    e[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    e[14..].fill(tag);
    f
}

/// A TCP/IPv4 GSO super-frame with `payload` bytes, as a stack hands it to a device.
fn super_frame(payload: usize) -> Vec<u8> {
    let (eth, ip, tcp) = (14, 20, 20);
    let mut f = vec![0u8; VNET_HDR_LEN + eth + ip + tcp + payload];
    // flags NEEDS_CSUM, gso TCPV4, hdr_len, gso_size, csum_start, csum_offset
    let h = &mut f[..VNET_HDR_LEN];
    h[0] = 1;
    h[1] = 1;
    h[2..4].copy_from_slice(&u16::try_from(eth + ip + tcp).unwrap().to_ne_bytes());
    h[4..6].copy_from_slice(&1448u16.to_ne_bytes());
    h[6..8].copy_from_slice(&u16::try_from(eth + ip).unwrap().to_ne_bytes());
    h[8..10].copy_from_slice(&16u16.to_ne_bytes());
    let e = &mut f[VNET_HDR_LEN..];
    e[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
    e[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    e[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let i = &mut e[eth..eth + ip];
    i[0] = 0x45;
    i[2..4].copy_from_slice(&u16::try_from(ip + tcp + payload).unwrap().to_be_bytes());
    i[8] = 64;
    i[9] = 6;
    i[12..16].copy_from_slice(&[10, 0, 0, 1]);
    i[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let t = &mut e[eth + ip..eth + ip + tcp];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&5201u16.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x10; // ACK
    for (b, k) in e[eth + ip + tcp..].iter_mut().zip((0..=u8::MAX).cycle()) {
        *b = k;
    }
    f
}

/// The frames `sock` reads (plain `recv`) within a short while.
fn drain(sock: &PacketSocket) -> Vec<Vec<u8>> {
    let (mut got, mut buf) = (vec![], vec![0u8; MAX_FRAME]);
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        match sock.recv(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    got
}

/// Waits until the ring holds a frame.
fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn ring_reads_small_frames_in_place_and_super_frames_whole() {
    let s = Scratch::new("ring");
    let rx = s.open("vb", 8);
    let tx = s.open("va", 0);
    assert!(rx.has_ring());

    let first = small(60, 1);
    let big = super_frame(20_000);
    let last = small(1514, 3);
    for f in [&first, &big, &last] {
        tx.send(f).expect("send");
    }
    settle();

    let mut buf = vec![0u8; MAX_FRAME];
    let ring = rx.reader().expect("the ring");
    assert!(
        rx.reader().is_none(),
        "a second reader while the first lives"
    );
    match ring.next() {
        Some(RxFrame::Whole(f)) => {
            assert_eq!(f[1], 0, "no GSO on a small frame");
            assert_eq!(&f[VNET_HDR_LEN..], &first[VNET_HDR_LEN..]);
        }
        other => panic!("expected the small frame in its slot, got {other:?}"),
    }
    match ring.next() {
        Some(RxFrame::Queued) => {
            let n = rx.recv(&mut buf).expect("the queued super-frame");
            assert_eq!(n, big.len(), "the super-frame arrives whole");
            assert_eq!(buf[1], 1, "gso_type TCPV4 survives");
            assert_eq!(&buf[4..6], &1448u16.to_ne_bytes(), "gso_size survives");
            assert_eq!(&buf[VNET_HDR_LEN..n], &big[VNET_HDR_LEN..]);
        }
        other => panic!("expected the super-frame queued, got {other:?}"),
    }
    match ring.next() {
        Some(RxFrame::Whole(f)) => assert_eq!(&f[VNET_HDR_LEN..], &last[VNET_HDR_LEN..]),
        other => panic!("expected the full-size frame in its slot, got {other:?}"),
    }
    assert!(ring.next().is_none());
    drop(ring);

    // Slots handed back are filled again, round the ring several times.
    for round in 0..5u8 {
        for k in 0..6 {
            tx.send(&small(100, round * 10 + k)).expect("send");
        }
        settle();
        let mut ring = rx.reader().expect("the ring");
        for k in 0..6 {
            match ring.next() {
                Some(RxFrame::Whole(f)) => assert_eq!(f[VNET_HDR_LEN + 14], round * 10 + k),
                other => panic!("round {round}, frame {k}: {other:?}"),
            }
        }
        assert!(ring.next().is_none());
        ring.release();
    }
}

#[test]
fn stats_count_what_the_ring_could_not_hold_and_reset() {
    let s = Scratch::new("stats");
    let rx = s.open("vb", 8);
    let tx = s.open("va", 0);
    let _ = rx.take_stats().expect("stats");
    for k in 0..20 {
        tx.send(&small(60, k)).expect("send");
    }
    settle();
    let st = rx.take_stats().expect("stats");
    assert_eq!(st.packets, 20, "every frame reached the socket");
    assert_eq!(st.drops, 12, "8 slots, 20 frames");
    assert_eq!(rx.take_stats().expect("stats").drops, 0, "reading resets");
}

#[test]
fn send_batch_reaches_several_devices_and_reports_failures() {
    let s = Scratch::new("batch");
    let (a, b) = (s.index("va"), s.index("vb"));
    let on_a = s.open("va", 0);
    let on_b = s.open("vb", 0);
    let sender = s.open("vb", 4);

    let frames: Vec<Vec<u8>> = (0..5).map(|k| small(80, 100 + k)).collect();
    let mut batch = SendBatch::new(4);
    let mut out = batch.start();
    // To a (arrives at b), to b (arrives at a), to no device, to a; then the batch is full.
    assert!(out.push(a, &frames[0], 0));
    assert!(out.push(b, &frames[1], 1));
    assert!(out.push(u32::MAX >> 1, &frames[2], 2));
    assert!(out.push(a, &frames[3], 3));
    assert!(out.is_full());
    assert!(!out.push(a, &frames[4], 4));
    let mut results = vec![];
    out.flush(&sender, |tag, len, sent| results.push((tag, len, sent)));
    assert!(out.is_empty());
    let n = frames[0].len();
    assert_eq!(
        results,
        vec![(0, n, true), (1, n, true), (2, n, false), (3, n, true)]
    );

    let tags =
        |got: Vec<Vec<u8>>| -> Vec<u8> { got.iter().map(|f| f[VNET_HDR_LEN + 14]).collect() };
    assert_eq!(
        tags(drain(&on_b)),
        vec![100, 103],
        "sent out of a, in order"
    );
    assert_eq!(tags(drain(&on_a)), vec![101], "sent out of b");
}

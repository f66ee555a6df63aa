//! Differential test (issue 4, item 2): the same frames go through the core's decision
//! function and through the compiled nftables program on real devices, and where each
//! frame went is compared.
//!
//! No daemon: one scratch namespace holds the master `eth0` (a veth whose peer `wire` is
//! the outside) and the host ends `ivhN` of three slaves, whose slave ends `slvN`
//! (carrying the master's MAC) are each in a namespace of their own, as a user's would
//! be. A [`Port`] with the mode and flags under test is compiled with
//! `ipvlan_core::compile` and applied with `nft`, and the fast path
//! (`ipvlan_core::fastpath`) is loaded and attached where the port has one, as the
//! daemon does: so the frames go through the whole kernel backend. Every frame of a
//! corpus is then injected from the wire (it arrives on `eth0`'s ingress:
//! [`Ingress::Master`]) and from each slave (it arrives on `ivhN`'s ingress:
//! [`Ingress::Slave`]), and packet sockets on `wire` and every `slvN` record where it
//! comes out. Where the port has a fast path, some frames must have reached their slave
//! past its host end (the fast path's peer redirect), and none where it has not.
//!
//! What the program owes, given `decide()`'s verdict (the kernel backend's division of
//! labour, see `ipvlan_datapath::Backend::filters` and the user backend's `switch`):
//!
//! * frames whose destination MAC is unicast: `ToSlave(T)` comes out at `slvT` only,
//!   `ToWire` at `wire` only, everything else (`Drop`, `ToMasterStack`, `Pass`) nowhere;
//!   a `Drop(Private)`, `Drop(Spoof)` (a slave sending with a source MAC other than the
//!   master's) or `Drop(SourceGuard)` is counted in the counter of that reason for the
//!   sending slave (`private_N`, `spoof_N`, `source_guard_N`: `compile::drop_counter`);
//! * `Route` (L3 and L3S egress, spec §4.2 step 3) is the host end's program's, routed
//!   by the kernel in the master's namespace (L3: `bpf_redirect_neigh`; L3S: forwarded
//!   by its stack, the TTL raised by one first, so it leaves unchanged too; the rig
//!   turns on the host ends' forwarding as `ipvlan_datapath`'s kernel `l3s` does) (`eth0` holds 192.0.2.200/24 and
//!   2001:db8:1::c8/64, routes everything else via a gateway on the wire, and has an
//!   IPv6 blackhole): it comes out at `wire` as the namespace routes it (the gateway's
//!   MAC, the IP packet unchanged) or is refused (counted in `eth0`'s `tx_errors`,
//!   which a veth does not report); except what is left to userspace (nowhere, and the host-end socket
//!   filter must copy it): destinations local to the master's namespace, what it routes
//!   as broadcast or multicast (IPv4), ICMPv6 from `::`, and sources the source guard lets through without owning them;
//! * frames whose destination MAC is a group address are userspace's (fan-out, and the
//!   L3 ARP/DAD diversion of spec §5.3): the program delivers them nowhere, whatever
//!   `decide()` says;
//! * runts (shorter than an Ethernet header) cannot even be sent.
//!
//! Every slave sends frames with a forged source MAC (`F>…`) of every kind the corpus
//! has: to another slave, to the wire, to the master's stack, from its own address
//! (which the source guard would let through), malformed, non-IP.
//!
//! Each batch (the corpus from one ingress) is sent in one go, then every socket is
//! drained for [`SETTLE`]; frames are told apart by their bytes (each carries a unique
//! marker where it has room), so one wait covers the batch. The counters are read
//! after every frame and once more at the end (a late increment fails the test).
//!
//! Disagreements that are bugs of the program are listed in [`known_bug`]: the per-mode
//! tests print them but do not fail on them; `known_bugs` (ignored) fails until they
//! are fixed. Run with `--nocapture` to see the tables.
//!
//! The ports with the source guard on (an ipvlan-rs extension) run the same corpus, and
//! so do ports with host access on (another): their host ends are set up as the
//! datapath does it (the master's MAC, ARP and IPv6 on), and what is for the master
//! namespace's own addresses — L2's `ToMasterStack`, L3's `Route` to a local
//! destination — must reach its stack through the host end (counted by an input rule
//! of the test's, `host_in`, which drops it there) and, in L3, must not be copied to
//! userspace by the host-end socket filter.
//!
//! Root only: panics with a clear message otherwise. Each port runs in its own
//! namespace, so the tests run in parallel.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};
use ipvlan_core::fastpath::{self, Attach, Maps, SlaveEntry, Spec};
use ipvlan_core::{
    Decision, DropReason, Flags, Ingress, MacAddr, McFilter, Mode, Port, PortSnapshot, SlaveId,
    compile, decide,
};
use ipvlan_sys::NetNs;
use ipvlan_sys::bpf::{Map, Prog};
use ipvlan_sys::nft;
use ipvlan_sys::packet::{MAX_FRAME, PacketSocket, VNET_HDR_LEN};
use ipvlan_sys::rtnl::Rtnl;

/// The master's MAC, which every slave end carries too.
const M: MacAddr = MacAddr([0x02, 0x1a, 0x5a, 0x00, 0x00, 0x01]);
/// A foreign MAC (the gateway, or a slave forging its source).
const F: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x99]);
/// Another unicast MAC (a neighbour on the wire).
const O: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x77]);
const BCAST: MacAddr = MacAddr([0xff; 6]);
const MC4: MacAddr = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
const MC6_SOL2: MacAddr = MacAddr([0x33, 0x33, 0xff, 0x00, 0x00, 0x02]);
const PAUSE: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x01]);

const TABLE: &str = "ipvlan_diff";
const SLAVES: usize = 3;
/// How long to wait for stragglers after the last frame of a batch.
const SETTLE: Duration = Duration::from_millis(150);

const fn v4(last: u8) -> [u8; 4] {
    [10, 0, 0, last]
}

const fn v6(last: u8) -> [u8; 16] {
    [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last,
    ]
}

/// Slave slot `i` (0-based) holds 10.0.0.(i+1) and 2001:db8::(i+1); slot 2 is down.
const UP: [bool; SLAVES] = [true, true, false];
const UNKNOWN4: [u8; 4] = v4(254);
const UNKNOWN6: [u8; 16] = v6(0xfe);

/// The master namespace's own addresses (on `eth0`), its gateway on the wire (whose MAC
/// is [`O`]), and what it cannot route (spec §4.2 step 3).
const LOCAL4: [u8; 4] = [192, 0, 2, 200];
const GATEWAY4: &str = "192.0.2.254";
/// Routed as broadcast in the master's namespace (the kernel refuses it): in the local
/// map, as the daemon puts it there.
const BCAST4: [u8; 4] = [192, 0, 2, 255];
const ELSEWHERE4: [u8; 4] = [198, 51, 100, 9];
const LOCAL6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc8,
];
const GATEWAY6: &str = "2001:db8:1::fe";
const UNROUTABLE6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xde, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];
const ELSEWHERE6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9,
];

fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "root integration test: the differential test builds namespaces, veths and \
             nftables tables; run it as root (e.g. `sudo ./x test`)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The scratch namespace
// ---------------------------------------------------------------------------------------

/// A named namespace, deleted (with every device in it) when dropped.
struct Scratch {
    name: String,
    ns: NetNs,
}

impl Scratch {
    fn new(tag: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ivdiff-{}-{}-{}",
            std::process::id(),
            tag,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = match NetNs::open(format!("/run/netns/{name}")) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
                panic!("open /run/netns/{name}: {e}");
            }
        };
        Self { name, ns }
    }

    fn ip(&self, args: &[&str]) {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    fn ifindex(&self, dev: &str) -> u32 {
        let out =
            run(Command::new("ip").args(["-n", &self.name, "-j", "link", "show", "dev", dev]));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("ip -j output");
        v[0]["ifindex"]
            .as_u64()
            .unwrap_or_else(|| panic!("no ifindex for {dev}: {v}"))
            .try_into()
            .expect("an ifindex is a u32")
    }

    /// Writes a sysctl of this namespace (from a thread inside it).
    fn sysctl(&self, path: &str, value: &str) {
        let full = format!("/proc/sys/{}", path.replace('.', "/"));
        self.ns
            .run(|| std::fs::write(&full, value))
            .and_then(|r| r)
            .unwrap_or_else(|e| panic!("sysctl {path}={value} in {}: {e}", self.name));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command, panicking with its output if it fails; returns its stdout.
fn run(cmd: &mut Command) -> Vec<u8> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    if !out.status.success() {
        panic!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out.stdout
}

// ---------------------------------------------------------------------------------------
// The rig: topology, port, program, sockets
// ---------------------------------------------------------------------------------------

/// Where a frame can come out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Wire,
    /// Slave slot (0-based).
    Slave(usize),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Wire => f.write_str("wire"),
            Place::Slave(i) => write!(f, "slv{}", i + 1),
        }
    }
}

struct Rig {
    scratch: Scratch,
    /// One namespace per slave end (the kernel refuses a peer redirect within one).
    slave_ns: Vec<Scratch>,
    snap: PortSnapshot,
    /// dev_id of each slot.
    ids: [SlaveId; SLAVES],
    wire: PacketSocket,
    slaves: Vec<PacketSocket>,
    /// The fast path's programs and maps, when the port has one (kept open for the
    /// rig's life; the attachments go with the devices).
    fast: Vec<Prog>,
    _maps: [Map; 4],
    /// In L3 and L3S with a host-end fast path: a packet socket on each host end with
    /// the kernel backend's socket filter, which copies to userspace all but what the
    /// fast path takes.
    host_socks: Vec<PacketSocket>,
}

impl Rig {
    fn new(mode: Mode, flags: Flags, guard: bool, host: bool) -> Self {
        let tag = format!(
            "{mode}-{flags}{}{}",
            if guard { "-g" } else { "" },
            if host { "-h" } else { "" }
        );
        let scratch = Scratch::new(&tag);
        let slave_ns: Vec<Scratch> = (1..=SLAVES)
            .map(|n| Scratch::new(&format!("{tag}-s{n}")))
            .collect();
        // IPv6 off before any device exists, so no device ever emits RS/ND/MLD.
        for ns in std::iter::once(&scratch).chain(&slave_ns) {
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        }
        let m = M.to_string();
        scratch.ip(&[
            "link", "add", "eth0", "address", &m, "type", "veth", "peer", "name", "wire",
        ]);
        for (n, ns) in (1..=SLAVES).zip(&slave_ns) {
            let (host, slave) = (format!("ivh{n}"), format!("slv{n}"));
            scratch.ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", &slave, "address", &m,
                "netns", &ns.name,
            ]);
        }
        for dev in ["eth0", "wire"] {
            scratch.ip(&["link", "set", dev, "up"]);
        }
        for (n, ns) in (1..=SLAVES).zip(&slave_ns) {
            scratch.ip(&["link", "set", &format!("ivh{n}"), "up"]);
            ns.ip(&["link", "set", &format!("slv{n}"), "up"]);
        }
        // The master's namespace routes L3 egress: everything via a gateway on the wire
        // (a static neighbour, so nothing is resolved), its own addresses local, an
        // IPv6 blackhole. IPv6 on eth0 only, without link-local, DAD or RAs.
        let o = O.to_string();
        scratch.ip(&["addr", "add", "192.0.2.200/24", "dev", "eth0"]);
        scratch.ip(&["route", "add", "default", "via", GATEWAY4]);
        scratch.ip(&[
            "neigh",
            "add",
            GATEWAY4,
            "lladdr",
            &o,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        for (key, value) in [
            ("addr_gen_mode", "1"),
            ("accept_dad", "0"),
            ("accept_ra", "0"),
            ("disable_ipv6", "0"),
        ] {
            scratch.sysctl(&format!("net.ipv6.conf.eth0.{key}"), value);
        }
        scratch.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::c8/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        scratch.ip(&[
            "-6", "route", "add", "default", "via", GATEWAY6, "dev", "eth0",
        ]);
        scratch.ip(&[
            "-6",
            "neigh",
            "add",
            GATEWAY6,
            "lladdr",
            &o,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        // A blackhole: an unreachable route would make the master's stack answer the
        // wire's frames for it with ICMPv6 errors.
        scratch.ip(&["-6", "route", "add", "blackhole", "2001:db8:dead::/48"]);

        if mode == Mode::L3s {
            // What `ipvlan_datapath`'s kernel `l3s` sets up for L3S egress: the host
            // ends forward (IPv6 on, without addresses, DAD or RAs).
            for n in 1..=SLAVES {
                scratch.sysctl(&format!("net.ipv4.conf.ivh{n}.forwarding"), "1");
                for (key, value) in [
                    ("addr_gen_mode", "1"),
                    ("accept_dad", "0"),
                    ("accept_ra", "0"),
                    ("disable_ipv6", "0"),
                    ("force_forwarding", "1"),
                ] {
                    scratch.sysctl(&format!("net.ipv6.conf.ivh{n}.{key}"), value);
                }
            }
        }

        let mut port = Port::new(M);
        port.apply_newlink(Some(mode), Some(flags));
        port.set_source_guard(guard);
        port.set_host_access(host);
        let mut ids = [SlaveId(0); SLAVES];
        for (i, id) in ids.iter_mut().enumerate() {
            *id = port.add_slave().expect("add_slave");
            port.set_slave_up(*id, UP[i]);
            let n = u8::try_from(i).unwrap() + 1;
            port.add_addr(*id, IpAddr::from(v4(n))).expect("add v4");
            port.add_addr(*id, IpAddr::from(v6(n))).expect("add v6");
            port.set_mc_filter(*id, McFilter::new());
        }
        let snap = port.snapshot();
        let ends: Vec<(SlaveId, String)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, format!("ivh{}", i + 1)))
            .collect();
        let script = compile::program(&snap, TABLE, "eth0", &ends).full();
        if let Err(e) = nft::apply(&scratch.ns, &script) {
            panic!("applying the compiled program failed: {e}\n{script}");
        }
        if host {
            // Host access, as the datapath sets it up: the host ends carry the master's
            // MAC, answer ARP and take IPv6. What reaches the master namespace's stack
            // through them is counted (`host_in`) and goes no further, so that its
            // answers do not mix with the frames under test.
            for n in 1..=SLAVES {
                let dev = format!("ivh{n}");
                scratch.ip(&["link", "set", &dev, "address", &m, "arp", "on"]);
                scratch.sysctl(&format!("net.ipv6.conf.{dev}.addr_gen_mode"), "1");
                scratch.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "0");
            }
            let host_in = "table inet diff_host {
  counter host_in {}
  chain input { type filter hook input priority 0; policy accept; iifname \"ivh*\" counter name host_in drop; }
}";
            if let Err(e) = nft::apply(&scratch.ns, host_in) {
                panic!("{e}");
            }
        }

        // The fast path, as the daemon sets it up: maps from every address in the table
        // to its host end (every slave end is in a namespace of its own) and of the
        // master namespace's own addresses, a program on the master and one on every
        // host end.
        let slave_map = |name, key| Map::hash(name, key, SlaveEntry::SIZE, 64).expect("BPF map");
        let local_map =
            |name, key| Map::hash(name, key, fastpath::LOCAL_VALUE.len(), 64).expect("BPF map");
        let maps = [
            slave_map("diff4", 4),
            slave_map("diff6", 16),
            local_map("diff_local4", 4),
            local_map("diff_local6", 16),
        ];
        for (ip, id) in snap.table.iter() {
            let slot = ids.iter().position(|i| *i == id).expect("known slave");
            let entry = SlaveEntry {
                host_index: scratch.ifindex(&format!("ivh{}", slot + 1)),
                peer: true,
            }
            .to_bytes();
            match ip {
                IpAddr::V4(a) => maps[0].set(&a.octets(), &entry),
                IpAddr::V6(a) => maps[1].set(&a.octets(), &entry),
            }
            .expect("map update");
        }
        let local = fastpath::LOCAL_VALUE;
        maps[2].set(&LOCAL4, &local).expect("map update");
        maps[2].set(&BCAST4, &local).expect("map update");
        maps[3].set(&LOCAL6, &local).expect("map update");
        maps[3]
            .set(&std::net::Ipv6Addr::LOCALHOST.octets(), &local)
            .expect("map update");
        let fds = Maps {
            slaves4: maps[0].raw_fd(),
            slaves6: maps[1].raw_fd(),
            local4: maps[2].raw_fd(),
            local6: maps[3].raw_fd(),
        };
        let spec = Spec {
            mode,
            flags,
            source_guard: guard,
            host_access: host,
            mac: M,
            master: scratch.ifindex("eth0"),
        };
        let mut fast = Vec::new();
        for (at, devs) in [
            (Attach::Master, vec!["eth0".to_string()]),
            (
                Attach::HostEnd,
                (1..=SLAVES).map(|n| format!("ivh{n}")).collect(),
            ),
        ] {
            if !fastpath::wanted(at, &spec) {
                continue;
            }
            let insns = fastpath::encode(&fastpath::program(at, &spec, &fds));
            let prog = Prog::load_sched_cls("ipvlan_diff", &insns)
                .unwrap_or_else(|e| panic!("loading the fast path ({at:?}): {e}"));
            // As the daemon attaches them: tcx on the master, a direct-action filter
            // under clsact on the host ends.
            for dev in devs {
                let idx = scratch.ifindex(&dev);
                let res = match at {
                    Attach::Master => scratch
                        .ns
                        .run(|| prog.attach_tcx_ingress(idx, None))
                        .and_then(|r| r)
                        .map_err(|e| e.to_string()),
                    Attach::HostEnd => Rtnl::in_ns(&scratch.ns)
                        .map_err(|e| e.to_string())
                        .and_then(|mut r| {
                            r.set_ingress_bpf(idx, Some((prog.raw_fd(), "ipvlan_diff")))
                                .map_err(|e| e.to_string())
                        }),
                };
                res.unwrap_or_else(|e| panic!("attaching the fast path to {dev}: {e}"));
            }
            fast.push(prog);
        }

        let open = |ns: &Scratch, dev: &str| {
            let idx = ns.ifindex(dev);
            ns.ns
                .run(|| PacketSocket::open(idx))
                .and_then(|r| r)
                .unwrap_or_else(|e| panic!("packet socket on {dev}: {e}"))
        };
        let mut host_socks = Vec::new();
        if mode != Mode::L2 && fastpath::wanted(Attach::HostEnd, &spec) {
            let insns = fastpath::encode(&fastpath::socket_filter(&spec, &fds));
            let filter = Prog::load_socket_filter("ipvlan_diff", &insns)
                .unwrap_or_else(|e| panic!("loading the socket filter: {e}"));
            for n in 1..=SLAVES {
                let sock = open(&scratch, &format!("ivh{n}"));
                sock.set_bpf_filter(&filter)
                    .expect("attach the socket filter");
                host_socks.push(sock);
            }
        }
        let wire = open(&scratch, "wire");
        let slaves = (1..=SLAVES)
            .zip(&slave_ns)
            .map(|(n, ns)| open(ns, &format!("slv{n}")))
            .collect();
        Self {
            scratch,
            slave_ns,
            snap,
            ids,
            wire,
            slaves,
            fast,
            _maps: maps,
            host_socks,
        }
    }

    /// Frames the slave ends received past their host ends: what the fast path
    /// delivered (a host end counts what it hands its slave as sent).
    fn delivered_past_host_ends(&self) -> u64 {
        let packets = |ns: &Scratch, dev: &str, dir: &str| {
            let out =
                run(Command::new("ip").args(["-n", &ns.name, "-j", "-s", "link", "show", dev]));
            let v: serde_json::Value = serde_json::from_slice(&out).expect("ip -j output");
            v[0]["stats64"][dir]["packets"].as_u64().unwrap_or(0)
        };
        (1..=SLAVES)
            .zip(&self.slave_ns)
            .map(|(n, ns)| {
                let rx = packets(ns, &format!("slv{n}"), "rx");
                let tx = packets(&self.scratch, &format!("ivh{n}"), "tx");
                rx.saturating_sub(tx)
            })
            .sum()
    }

    fn sock(&self, p: Place) -> &PacketSocket {
        match p {
            Place::Wire => &self.wire,
            Place::Slave(i) => &self.slaves[i],
        }
    }

    fn places() -> impl Iterator<Item = Place> {
        std::iter::once(Place::Wire).chain((0..SLAVES).map(Place::Slave))
    }

    fn slot_of(&self, id: SlaveId) -> Option<usize> {
        self.ids.iter().position(|i| *i == id)
    }

    /// The named counters (the program's, and `host_in`): name → packets.
    fn counters(&self) -> BTreeMap<String, u64> {
        let out = nft::query(&self.scratch.ns, &["-j", "list", "counters"])
            .unwrap_or_else(|e| panic!("nft list counters: {e}"));
        let v: serde_json::Value = serde_json::from_str(&out).expect("nft -j output");
        let mut map = BTreeMap::new();
        for obj in v["nftables"].as_array().into_iter().flatten() {
            if let Some(c) = obj.get("counter") {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                map.insert(name, c["packets"].as_u64().unwrap_or(0));
            }
        }
        map
    }

    /// Every frame waiting on one socket.
    fn take(sock: &PacketSocket) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => got.push(buf[VNET_HDR_LEN.min(n)..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// Everything the observing sockets received within `wait`.
    fn drain(&self, wait: Duration) -> Vec<(Place, Vec<u8>)> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; MAX_FRAME];
        let deadline = Instant::now() + wait;
        loop {
            for p in Self::places() {
                loop {
                    match self.sock(p).recv(&mut buf) {
                        Ok(n) => got.push((p, buf[VNET_HDR_LEN.min(n)..n].to_vec())),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("recv on {p}: {e}"),
                    }
                }
            }
            if Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------

/// A unique marker carried in every frame that has room for one.
fn marker(batch: u32, idx: usize) -> [u8; 8] {
    let mut m = *b"DIFF\0\0\0\0";
    m[4..].copy_from_slice(&((batch << 8) | u32::try_from(idx).unwrap()).to_be_bytes());
    m
}

fn udp4(dst: MacAddr, src: MacAddr, sip: [u8; 4], dip: [u8; 4], mk: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip, dip, 64)
        .udp(1234, 5678);
    let mut out = Vec::new();
    b.write(&mut out, mk).expect("udp4");
    out
}

fn udp6(dst: MacAddr, src: MacAddr, sip: [u8; 16], dip: [u8; 16], mk: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv6(sip, dip, 64)
        .udp(1234, 5678);
    let mut out = Vec::new();
    b.write(&mut out, mk).expect("udp6");
    out
}

/// An ICMP echo reply from the master's MAC to `dst`.
fn echo4(dst: MacAddr, sip: [u8; 4], dip: [u8; 4], mk: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(M.0, dst.0)
        .ipv4(sip, dip, 64)
        .icmpv4_echo_reply(7, 1);
    let mut out = Vec::new();
    b.write(&mut out, mk).expect("echo4");
    out
}

fn echo6(dst: MacAddr, sip: [u8; 16], dip: [u8; 16], mk: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(M.0, dst.0)
        .ipv6(sip, dip, 64)
        .icmpv6_echo_reply(7, 1);
    let mut out = Vec::new();
    b.write(&mut out, mk).expect("echo6");
    out
}

/// `frame` as the master's namespace sends it when it routes it to the gateway: the
/// gateway's MAC, the master's, the IP packet unchanged (TTL too, spec §4.2).
fn routed(frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[..6].copy_from_slice(&O.0);
    out[6..12].copy_from_slice(&M.0);
    out
}

/// What the kernel does with a frame `decide()` routes and the host end's program
/// takes (`None`: the program leaves it to userspace, with the reason).
enum Routed {
    Wire,
    /// Refused by the route lookup or its type check (counted in the master's
    /// `tx_errors`, which a veth master does not report).
    Refused,
}

/// With host access: delivered to the master namespace's stack through the host end, in
/// the kernel (counted `host_in`), not copied to userspace.
const HOST_STACK: &str = "host stack";

fn kernel_route(rig: &Rig, ingress: Ingress, frame: &[u8]) -> Result<Routed, &'static str> {
    let Ingress::Slave(sender) = ingress else {
        return Err("route: not from a slave");
    };
    let owned_by_sender = |ip: IpAddr| rig.snap.table.owner(&ip) == Some(sender);
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => {
            let src: [u8; 4] = frame[26..30].try_into().expect("checked header");
            let dst: [u8; 4] = frame[30..34].try_into().expect("checked header");
            if rig.snap.source_guard && !owned_by_sender(src.into()) {
                return Err("route: guard exception, userspace");
            }
            if rig.snap.host_access && dst == LOCAL4 {
                return Err(HOST_STACK);
            }
            if rig.snap.host_access && dst == BCAST4 {
                return Err("route: broadcast, dropped uncounted (host access)");
            }
            if dst[0] == 127 || dst == LOCAL4 {
                return Err("route: local, userspace");
            }
            if dst == BCAST4 || dst[0] >= 224 {
                return Err("route: broadcast/multicast, userspace");
            }
            Ok(Routed::Wire)
        }
        0x86dd => {
            let src: [u8; 16] = frame[22..38].try_into().expect("checked header");
            let dst: [u8; 16] = frame[38..54].try_into().expect("checked header");
            if frame[20] == 58 && src == [0; 16] {
                return Err("route: ICMPv6 from ::, userspace");
            }
            if rig.snap.source_guard && !owned_by_sender(src.into()) {
                return Err("route: guard exception, userspace");
            }
            if rig.snap.host_access && dst == LOCAL6 {
                return Err(HOST_STACK);
            }
            if rig.snap.host_access && dst == std::net::Ipv6Addr::LOCALHOST.octets() {
                return Err("route: ::1 from a device, dropped by the stack (host access)");
            }
            if dst == LOCAL6 || dst == std::net::Ipv6Addr::LOCALHOST.octets() {
                return Err("route: local, userspace");
            }
            if dst[..6] == UNROUTABLE6[..6] {
                return Ok(Routed::Refused);
            }
            Ok(Routed::Wire)
        }
        _ => Err("route: not IP"),
    }
}

/// IPv4 or IPv6 to one of the master namespace's own addresses.
fn local_ip(frame: &[u8]) -> bool {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => frame.get(30..34) == Some(&LOCAL4[..]),
        0x86dd => frame.get(38..54) == Some(&LOCAL6[..]),
        _ => false,
    }
}

/// An ARP packet, the marker after it (as Ethernet padding).
fn arp(
    dst: MacAddr,
    src: MacAddr,
    op: ArpOperation,
    spa: [u8; 4],
    tpa: [u8; 4],
    mk: &[u8],
) -> Vec<u8> {
    let tha = if op == ArpOperation::REPLY {
        dst.0
    } else {
        [0; 6]
    };
    let pkt = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &src.0,
        &spa,
        &tha,
        &tpa,
    )
    .expect("arp");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src.0, dst.0)
        .arp(pkt)
        .write(&mut out)
        .expect("arp");
    out.extend_from_slice(mk);
    out
}

/// A DAD probe: NS from `::` to the solicited-node group of `target`, sent to `dst`.
fn dad(dst: MacAddr, src: MacAddr, target: [u8; 16], mk: &[u8]) -> Vec<u8> {
    let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&target[13..]);
    let mut body = target.to_vec();
    body.extend_from_slice(mk);
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv6([0; 16], group, 255)
        .icmpv6_raw(135, 0, [0; 4]);
    let mut out = Vec::new();
    b.write(&mut out, &body).expect("dad");
    out
}

fn raw(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const ETH: usize = 14;

/// The frames, with their labels; `batch` makes the markers unique per batch.
fn corpus(batch: u32) -> Vec<(&'static str, Vec<u8>)> {
    type Build = fn(&[u8]) -> Vec<u8>;
    let list: Vec<(&'static str, Build)> = vec![
        // Unicast, source = master MAC, destination = master MAC.
        ("ip4 M>M to s1", |mk| udp4(M, M, v4(1), v4(1), mk)),
        ("ip4 M>M to s2", |mk| udp4(M, M, v4(1), v4(2), mk)),
        ("ip4 M>M to s3(down)", |mk| udp4(M, M, v4(1), v4(3), mk)),
        ("ip4 M>M to unknown", |mk| udp4(M, M, v4(1), UNKNOWN4, mk)),
        ("ip6 M>M to s1", |mk| udp6(M, M, v6(2), v6(1), mk)),
        ("ip6 M>M to s2", |mk| udp6(M, M, v6(1), v6(2), mk)),
        ("ip6 M>M to unknown", |mk| udp6(M, M, v6(1), UNKNOWN6, mk)),
        // Routed in L3 (spec §4.2 step 3): elsewhere, to the master's namespace itself,
        // to what it routes as broadcast or cannot route. ICMP echo replies, which the
        // master's stack takes from the wire without answering.
        ("ip4 M>M to elsewhere", |mk| {
            udp4(M, M, v4(1), ELSEWHERE4, mk)
        }),
        ("ip6 M>M to elsewhere", |mk| {
            udp6(M, M, v6(1), ELSEWHERE6, mk)
        }),
        ("icmp4 M>M to master ns", |mk| echo4(M, v4(1), LOCAL4, mk)),
        ("icmp4 M>M to 127.0.0.1", |mk| {
            echo4(M, v4(1), [127, 0, 0, 1], mk)
        }),
        ("icmp4 M>M to bcast route", |mk| echo4(M, v4(1), BCAST4, mk)),
        ("icmp6 M>M to master ns", |mk| echo6(M, v6(1), LOCAL6, mk)),
        ("icmp6 M>M to ::1", |mk| {
            echo6(M, v6(1), std::net::Ipv6Addr::LOCALHOST.octets(), mk)
        }),
        ("icmp6 M>M unroutable", |mk| {
            echo6(M, v6(1), UNROUTABLE6, mk)
        }),
        ("arp-reply M>M to s1", |mk| {
            arp(M, M, ArpOperation::REPLY, v4(2), v4(1), mk)
        }),
        ("arp-reply M>M to s2", |mk| {
            arp(M, M, ArpOperation::REPLY, v4(1), v4(2), mk)
        }),
        ("arp-reply M>M to unknown", |mk| {
            arp(M, M, ArpOperation::REPLY, v4(1), UNKNOWN4, mk)
        }),
        ("dad-ns M>M (unicast) tgt s2", |mk| dad(M, M, v6(2), mk)),
        ("ip4 IHL=3 M>M to s2", |mk| {
            let mut f = udp4(M, M, v4(1), v4(2), mk);
            f[ETH] = 0x43;
            f
        }),
        ("ip4 totlen>len M>M to s2", |mk| {
            let mut f = udp4(M, M, v4(1), v4(2), mk);
            let tl = u16::from_be_bytes([f[ETH + 2], f[ETH + 3]]) + 1;
            f[ETH + 2..ETH + 4].copy_from_slice(&tl.to_be_bytes());
            f
        }),
        ("ip4 version=6 M>M to s2", |mk| {
            let mut f = udp4(M, M, v4(1), v4(2), mk);
            f[ETH] = 0x65;
            f
        }),
        ("ip6 version=4 M>M to s2", |mk| {
            let mut f = udp6(M, M, v6(1), v6(2), mk);
            f[ETH] = 0x40;
            f
        }),
        ("ip6 hdr truncated M>M to s2", |mk| {
            let f = udp6(M, M, v6(1), v6(2), mk);
            f[..ETH + 39].to_vec()
        }),
        ("0x88b5 M>M", |mk| raw(M, M, 0x88b5, mk)),
        // What an address-less host sends (the source guard's exceptions), and what
        // hides its source.
        ("dhcp 0.0.0.0>bcast:67 M>O", |mk| {
            let b = PacketBuilder::ethernet2(M.0, O.0)
                .ipv4([0; 4], [255; 4], 64)
                .udp(68, 67);
            let mut out = Vec::new();
            b.write(&mut out, mk).expect("dhcp");
            out
        }),
        ("ip4 0.0.0.0 M>O to s2", |mk| udp4(O, M, [0; 4], v4(2), mk)),
        ("ip4 0.0.0.0 M>M to s2", |mk| udp4(M, M, [0; 4], v4(2), mk)),
        ("arp-probe M>M for s2", |mk| {
            arp(M, M, ArpOperation::REQUEST, [0; 4], v4(2), mk)
        }),
        ("ip6 :: udp M>M to s2", |mk| udp6(M, M, [0; 16], v6(2), mk)),
        ("vlan-tagged ip4 M>O", |mk| {
            let inner = udp4(O, M, v4(1), UNKNOWN4, mk);
            let mut f = inner[..12].to_vec();
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            f.extend_from_slice(&inner[12..]);
            f
        }),
        // Unicast, source = master MAC, destination = another MAC.
        ("ip4 M>O to s2", |mk| udp4(O, M, v4(1), v4(2), mk)),
        ("ip4 M>O to unknown", |mk| udp4(O, M, v4(1), UNKNOWN4, mk)),
        ("ip6 M>O to s2", |mk| udp6(O, M, v6(1), v6(2), mk)),
        ("arp-reply M>O to s2", |mk| {
            arp(O, M, ArpOperation::REPLY, v4(1), v4(2), mk)
        }),
        // Unicast from a foreign MAC (the gateway; a spoofing slave).
        ("ip4 F>M to s2", |mk| udp4(M, F, v4(100), v4(2), mk)),
        ("ip6 F>M to s2", |mk| udp6(M, F, v6(100), v6(2), mk)),
        ("arp-reply F>M to s2", |mk| {
            arp(M, F, ArpOperation::REPLY, v4(100), v4(2), mk)
        }),
        ("ip4 F>O to unknown", |mk| udp4(O, F, v4(100), UNKNOWN4, mk)),
        ("ip4 F>F to s2", |mk| udp4(F, F, v4(100), v4(2), mk)),
        // A slave forging its MAC but not its address (what the source guard passes).
        ("ip4 F>M s1 to s2", |mk| udp4(M, F, v4(1), v4(2), mk)),
        ("ip4 F>M s2 to s1", |mk| udp4(M, F, v4(2), v4(1), mk)),
        ("ip6 F>M s1 to s2", |mk| udp6(M, F, v6(1), v6(2), mk)),
        ("ip4 F>O s1 to unknown", |mk| {
            udp4(O, F, v4(1), UNKNOWN4, mk)
        }),
        ("ip6 F>O s2 to unknown", |mk| {
            udp6(O, F, v6(2), UNKNOWN6, mk)
        }),
        ("ip4 F>F s1 to s2", |mk| udp4(F, F, v4(1), v4(2), mk)),
        ("ip4 F>M s1 to unknown", |mk| {
            udp4(M, F, v4(1), UNKNOWN4, mk)
        }),
        ("arp-reply F>M s1 to s2", |mk| {
            arp(M, F, ArpOperation::REPLY, v4(1), v4(2), mk)
        }),
        ("ip4 IHL=3 F>M s1 to s2", |mk| {
            let mut f = udp4(M, F, v4(1), v4(2), mk);
            f[ETH] = 0x43;
            f
        }),
        ("0x88b5 F>M", |mk| raw(M, F, 0x88b5, mk)),
        ("0x88b5 F>O", |mk| raw(O, F, 0x88b5, mk)),
        // Group destinations.
        ("arp-req M>bcast for s2", |mk| {
            arp(BCAST, M, ArpOperation::REQUEST, v4(1), v4(2), mk)
        }),
        ("arp-req F>bcast for s2", |mk| {
            arp(BCAST, F, ArpOperation::REQUEST, v4(100), v4(2), mk)
        }),
        ("ip4 M>mcast 224.0.0.1", |mk| {
            udp4(MC4, M, v4(1), [224, 0, 0, 1], mk)
        }),
        ("dad-ns M>33:33:ff tgt s2", |mk| dad(MC6_SOL2, M, v6(2), mk)),
        ("0x88cc M>bcast", |mk| raw(BCAST, M, 0x88cc, mk)),
        ("pause M>01:80:c2:0:0:1", |mk| {
            let mut p = vec![0x00, 0x01, 0xff, 0xff];
            p.extend_from_slice(mk);
            raw(PAUSE, M, 0x8808, &p)
        }),
        // Runts and garbage.
        ("runt 13 bytes", |_| raw(M, M, 0x0800, &[])[..13].to_vec()),
        ("hdr only 14B ip4 M>M", |_| raw(M, M, 0x0800, &[])),
    ];
    let frames: Vec<(&'static str, Vec<u8>)> = list
        .into_iter()
        .enumerate()
        .map(|(i, (label, build))| (label, build(&marker(batch, i))))
        .collect();
    let distinct: BTreeSet<&Vec<u8>> = frames.iter().map(|(_, f)| f).collect();
    assert_eq!(
        distinct.len(),
        frames.len(),
        "corpus frames must be distinct"
    );
    frames
}

// ---------------------------------------------------------------------------------------
// Expectation, observation, comparison
// ---------------------------------------------------------------------------------------

/// Where a frame went, and which of the program's counters it moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Outcome {
    places: BTreeSet<Place>,
    /// Counter name → packets added.
    counted: BTreeMap<String, u64>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = if self.places.is_empty() {
            "-".to_string()
        } else {
            self.places
                .iter()
                .map(Place::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        for (c, n) in &self.counted {
            let _ = write!(s, " {c}+{n}");
        }
        f.write_str(&s)
    }
}

/// What the compiled program must do with `frame` entering at `ingress`, given
/// `decide()`'s verdict `d` (the division of labour in the module documentation).
fn program_share(
    rig: &Rig,
    ingress: Ingress,
    frame: &[u8],
    d: Decision,
) -> (Outcome, &'static str) {
    let mut out = Outcome::default();
    if frame.len() < ETH {
        return (out, "runt");
    }
    if frame[0] & 1 != 0 {
        return (out, "group: userspace");
    }
    let why = match d {
        Decision::ToSlave(t) => {
            out.places
                .insert(Place::Slave(rig.slot_of(t).expect("known slave")));
            ""
        }
        Decision::ToWire => {
            out.places.insert(Place::Wire);
            ""
        }
        // The drops the program counts, each in the counter of its reason.
        Decision::Drop(
            why @ (DropReason::Private | DropReason::Spoof | DropReason::SourceGuard),
        ) => {
            if let Ingress::Slave(s) = ingress {
                out.counted.insert(compile::drop_counter(why, s), 1);
            }
            ""
        }
        Decision::Route => match kernel_route(rig, ingress, frame) {
            Ok(Routed::Wire) => {
                out.places.insert(Place::Wire);
                "routed"
            }
            // Counted in the master's `tx_errors`, which a veth does not report.
            Ok(Routed::Refused) => "routed: refused",
            Err(HOST_STACK) => {
                out.counted.insert("host_in".into(), 1);
                HOST_STACK
            }
            Err(why) => why,
        },
        // With host access the host end's stack takes what is for the master
        // namespace's own addresses (spec §4.1's delivery to the master's stack).
        Decision::ToMasterStack if rig.snap.host_access && local_ip(frame) => {
            out.counted.insert("host_in".into(), 1);
            HOST_STACK
        }
        Decision::Flood { .. } => "flood: userspace",
        _ => "",
    };
    (out, why)
}

fn show_decision(rig: &Rig, d: Decision) -> String {
    match d {
        Decision::ToSlave(t) => match rig.slot_of(t) {
            Some(i) => format!("ToSlave(slv{})", i + 1),
            None => format!("ToSlave({t})"),
        },
        Decision::Drop(r) => format!("Drop({r})"),
        Decision::Flood { to_wire, .. } => {
            if to_wire {
                "Flood+wire".into()
            } else {
                "Flood".into()
            }
        }
        other => format!("{other:?}"),
    }
}

/// Disagreements this test found that are bugs of the compiled program
/// (`ipvlan_core::compile`), not of the test. The per-mode tests print these rows but
/// do not assert them; [`known_bugs`] (ignored until they are fixed) asserts every row.
///
/// * A: the program switches IPv4/IPv6 by `ip daddr`/`ip6 daddr` without the header
///   checks of the demux key (spec §3: version, IHL ≥ 5, IHL·4 ≤ total length ≤ bytes
///   present; IPv6 version): decide() finds no key (Pass, ToMasterStack,
///   Drop(malformed)) but the frame reaches the owner of the destination, and with
///   `private` it is counted in `private_N`.
/// * B: on L3/L3S host ends the program has no ARP rule, so unicast ARP from a slave
///   to another slave's address (decide(): ToSlave by the ARP target, spec §4.2) is
///   dropped; the kernel backend's switching thread skips unicast ToSlave, so nobody
///   delivers it.
/// * C: a DAD probe (NS from `::`) with a unicast destination MAC is keyed by its target
///   (spec §3) in decide(), by its IPv6 destination (the solicited-node group) in the
///   program: not delivered (and not counted `private`).
fn known_bug(_mode: Mode, _ingress: Ingress, frame: &str) -> Option<&'static str> {
    // C: a DAD probe (NS from ::) sent to a unicast MAC is keyed by its target in
    // decide() (§3) but by its destination in the program, which finds no owner. Real
    // DAD probes go to a multicast MAC, which userspace handles.
    (frame == "dad-ns M>M (unicast) tgt s2").then_some("C")
}

struct Row {
    ingress: String,
    frame: &'static str,
    decide: String,
    known_bug: Option<&'static str>,
    expected: Outcome,
    note: &'static str,
    observed: Outcome,
    /// Anything odd seen for this frame (a modified copy, a refused send).
    extra: String,
}

impl Row {
    fn agrees(&self) -> bool {
        self.expected == self.observed
    }
}

/// Injects the corpus at one ingress and records the outcome of every frame.
/// What the host-end socket filter did with a batch: frames it did not copy to
/// userspace, and of those the ones the kernel left to userspace (which then never saw them).
#[derive(Default)]
struct Skipped {
    frames: usize,
    lost: Vec<String>,
}

fn run_batch(
    rig: &Rig,
    batch: u32,
    from: Option<usize>,
    rows: &mut Vec<Row>,
    noise: &mut usize,
    skipped: &mut Skipped,
) {
    let frames = corpus(batch);
    let (ingress, sender, label) = match from {
        None => (Ingress::Master, &rig.wire, "master".to_string()),
        Some(i) => (
            Ingress::Slave(rig.ids[i]),
            &rig.slaves[i],
            format!("slv{}{}", i + 1, if UP[i] { "" } else { "(down)" }),
        ),
    };
    // Anything left over from before is not ours.
    *noise += rig.drain(Duration::from_millis(10)).len();
    if let Some(i) = from
        && let Some(h) = rig.host_socks.get(i)
    {
        // Whatever was there before the batch is not ours.
        *noise += Rig::take(h).len();
    }

    let mut last = rig.counters();
    let mut deltas: Vec<BTreeMap<String, u64>> = Vec::new();
    let mut refused: Vec<Option<String>> = Vec::new();
    for (_, f) in &frames {
        let mut buf = vec![0u8; VNET_HDR_LEN];
        buf.extend_from_slice(f);
        refused.push(match sender.send(&buf) {
            Ok(_) => None,
            Err(e) if f.len() < ETH && e.raw_os_error() == Some(libc_einval()) => {
                Some(" send refused (EINVAL)".into())
            }
            Err(e) => panic!("send of {} bytes from {label}: {e}", f.len()),
        });
        let now = rig.counters();
        let delta = now
            .iter()
            .filter_map(|(k, v)| {
                let d = v - last.get(k).copied().unwrap_or(0);
                (d > 0).then(|| (k.clone(), d))
            })
            .collect();
        deltas.push(delta);
        last = now;
    }
    let got = rig.drain(SETTLE);
    assert_eq!(
        rig.counters(),
        last,
        "counters moved after the last frame from {label}: per-frame attribution unreliable"
    );

    let mut observed: Vec<Outcome> = deltas
        .into_iter()
        .map(|counted| Outcome {
            places: BTreeSet::new(),
            counted,
        })
        .collect();
    let mut extra: Vec<String> = refused.into_iter().map(Option::unwrap_or_default).collect();
    let decisions: Vec<Decision> = frames
        .iter()
        .map(|(_, f)| decide(&rig.snap, ingress, f))
        .collect();
    for (place, bytes) in got {
        // A routed frame comes out as the master's namespace sends it.
        let as_sent = |i: usize| {
            let f = &frames[i].1;
            *f == bytes || (decisions[i] == Decision::Route && f.len() >= ETH && routed(f) == bytes)
        };
        if let Some(i) = (0..frames.len()).find(|&i| as_sent(i)) {
            if !observed[i].places.insert(place) {
                let _ = write!(extra[i], " dup@{place}");
            }
        } else if let Some(i) = (0..frames.len()).find(|&i| {
            let mk = marker(batch, i);
            bytes.windows(mk.len()).any(|w| w == mk)
        }) {
            let _ = write!(extra[i], " modified copy@{place}");
            if decisions[i] == Decision::Route {
                // Routing must not change the packet (the TTL stays, spec §4.2).
                observed[i].counted.insert("not as routed".into(), 1);
            }
            observed[i].places.insert(place);
        } else {
            *noise += 1;
            eprintln!(
                "noise at {place} during {label}: {} bytes {:02x?}",
                bytes.len(),
                &bytes[..bytes.len().min(34)]
            );
        }
    }

    let mut not_copied = vec![false; frames.len()];
    if let Some(i) = from
        && let Some(h) = rig.host_socks.get(i)
    {
        let copied = Rig::take(h);
        for (k, (_, f)) in frames.iter().enumerate() {
            // A copy may differ from what was sent (a VLAN tag moved beside it): the
            // frame's marker tells.
            let mk = marker(batch, k);
            let seen = copied
                .iter()
                .any(|c| c == f || c.windows(mk.len()).any(|w| w == mk));
            if !extra[k].contains("refused") && !seen {
                skipped.frames += 1;
                not_copied[k] = true;
            }
        }
    }

    for (k, (((name, f), obs), extra)) in frames.iter().zip(observed).zip(extra).enumerate() {
        let d = decisions[k];
        let (expected, note) = program_share(rig, ingress, f, d);
        // What userspace must handle, it must see; what the host end's stack takes, it
        // must not.
        if not_copied[k] && note.contains("userspace") {
            skipped.lost.push(format!("from {label}: {name}"));
        }
        if note == HOST_STACK && from.is_some_and(|i| i < rig.host_socks.len()) && !not_copied[k] {
            skipped
                .lost
                .push(format!("from {label}: {name} (copied, taken by the host)"));
        }
        rows.push(Row {
            ingress: label.clone(),
            frame: name,
            decide: show_decision(rig, d),
            known_bug: known_bug(rig.snap.mode, ingress, name),
            expected,
            note,
            observed: obs,
            extra,
        });
    }
}

fn libc_einval() -> i32 {
    nix::errno::Errno::EINVAL as i32
}

/// Every mode and flag the kernel backend compiles differently.
const PORTS: [(Mode, Flags); 7] = [
    (Mode::L2, Flags::Bridge),
    (Mode::L2, Flags::Private),
    (Mode::L2, Flags::Vepa),
    (Mode::L3, Flags::Bridge),
    (Mode::L3, Flags::Private),
    (Mode::L3, Flags::Vepa),
    (Mode::L3s, Flags::Bridge),
];

/// Runs the whole corpus through one port; prints the table. `Err` lists the rows that
/// disagree (all of them with `all`, else those not explained by [`known_bug`]).
fn differential(
    mode: Mode,
    flags: Flags,
    guard: bool,
    host: bool,
    all: bool,
) -> Result<(), String> {
    require_root();
    let started = Instant::now();
    let rig = Rig::new(mode, flags, guard, host);
    let mut rows = Vec::new();
    let mut noise = 0;
    let mut skipped = Skipped::default();
    run_batch(&rig, 0, None, &mut rows, &mut noise, &mut skipped);
    for i in 0..SLAVES {
        run_batch(
            &rig,
            u32::try_from(i).unwrap() + 1,
            Some(i),
            &mut rows,
            &mut noise,
            &mut skipped,
        );
    }

    let title = format!(
        "{mode} {flags}{}{}",
        if guard { " guard" } else { "" },
        if host { " host" } else { "" }
    );
    let mut table = format!(
        "\n== differential: {title} ({} frames, {:?}, {noise} unrelated frames seen) ==\n",
        rows.len(),
        started.elapsed()
    );
    let _ = writeln!(
        table,
        "{:<11} {:<11} {:<29} {:<18} {:<31} {:<16} result",
        "mode", "ingress", "frame", "decide()", "program must", "observed"
    );
    for r in &rows {
        let must = if r.note.is_empty() {
            r.expected.to_string()
        } else {
            format!("{} ({})", r.expected, r.note)
        };
        let verdict = match (r.agrees(), r.known_bug) {
            (true, _) => "ok".to_string(),
            (false, Some(b)) => format!("DIFFERS (known bug {b})"),
            (false, None) => "DIFFERS".to_string(),
        };
        let _ = writeln!(
            table,
            "{:<11} {:<11} {:<29} {:<18} {:<31} {:<16} {verdict}{}",
            title, r.ingress, r.frame, r.decide, must, r.observed, r.extra
        );
    }
    let past = rig.delivered_past_host_ends();
    let _ = writeln!(
        table,
        "fast path: {} program(s); {past} frames reached a slave past its host end",
        rig.fast.len()
    );
    if !rig.host_socks.is_empty() {
        let _ = writeln!(
            table,
            "host-end socket filter: {} frames not copied to userspace",
            skipped.frames
        );
    }
    println!("{table}");
    // What the socket filter keeps from userspace must be what the kernel switched to
    // a slave; and it must have kept something.
    assert!(
        skipped.lost.is_empty(),
        "{title}: the host-end socket filter hid frames no slave received: {:?}",
        skipped.lost
    );
    assert_eq!(
        skipped.frames > 0,
        !rig.host_socks.is_empty(),
        "{title}: {} frames skipped by {} filtered host-end sockets",
        skipped.frames,
        rig.host_socks.len()
    );
    // The fast path must have been exercised where there is one, and never where not.
    assert_eq!(
        past > 0,
        !rig.fast.is_empty(),
        "{title}: {past} frames past the host ends with {} fast-path programs",
        rig.fast.len()
    );

    let bad: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.agrees() && (all || r.known_bug.is_none()))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "{} of {} frames: the compiled program and decide() disagree ({title}):\n",
        bad.len(),
        rows.len()
    );
    for r in bad {
        let _ = writeln!(
            msg,
            "  from {} {:?}: decide {} => program must {}, observed {}{}{}",
            r.ingress,
            r.frame,
            r.decide,
            r.expected,
            r.observed,
            r.extra,
            r.known_bug
                .map(|b| format!(" [known bug {b}]"))
                .unwrap_or_default()
        );
    }
    Err(msg)
}

fn check(mode: Mode, flags: Flags) {
    if let Err(msg) = differential(mode, flags, false, false, false) {
        panic!("{msg}");
    }
}

fn check_guarded(mode: Mode, flags: Flags) {
    if let Err(msg) = differential(mode, flags, true, false, false) {
        panic!("{msg}");
    }
}

fn check_host_access(mode: Mode, flags: Flags, guard: bool) {
    if let Err(msg) = differential(mode, flags, guard, true, false) {
        panic!("{msg}");
    }
}

#[test]
fn l2_bridge_host_access() {
    check_host_access(Mode::L2, Flags::Bridge, false);
}

#[test]
fn l2_private_host_access_source_guard() {
    check_host_access(Mode::L2, Flags::Private, true);
}

#[test]
fn l3_bridge_host_access() {
    check_host_access(Mode::L3, Flags::Bridge, false);
}

#[test]
fn l3_private_host_access_source_guard() {
    check_host_access(Mode::L3, Flags::Private, true);
}

#[test]
fn l2_bridge() {
    check(Mode::L2, Flags::Bridge);
}

#[test]
fn l2_private() {
    check(Mode::L2, Flags::Private);
}

#[test]
fn l2_vepa() {
    check(Mode::L2, Flags::Vepa);
}

#[test]
fn l3_bridge() {
    check(Mode::L3, Flags::Bridge);
}

#[test]
fn l3_private() {
    check(Mode::L3, Flags::Private);
}

#[test]
fn l3_vepa() {
    check(Mode::L3, Flags::Vepa);
}

#[test]
fn l3s_bridge() {
    check(Mode::L3s, Flags::Bridge);
}

#[test]
fn l2_bridge_source_guard() {
    check_guarded(Mode::L2, Flags::Bridge);
}

#[test]
fn l2_vepa_source_guard() {
    check_guarded(Mode::L2, Flags::Vepa);
}

#[test]
fn l3_private_source_guard() {
    check_guarded(Mode::L3, Flags::Private);
}

/// Every row of every port, the known gap included: fails until it is closed.
#[test]
#[ignore = "gap C: the kernel program keys a DAD probe sent to a unicast MAC by its IPv6 \
            destination, not its target (real probes use a multicast MAC); see known_bug()"]
fn known_bugs() {
    let failed: Vec<String> = PORTS
        .iter()
        .filter_map(|&(mode, flags)| differential(mode, flags, false, false, true).err())
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

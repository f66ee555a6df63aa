//! The kernel backend's fast path: BPF programs on the master's and the host ends'
//! ingress, assembled here.
//!
//! The nftables program of [`crate::compile`] `fwd`s a frame to the target slave's host
//! end, whose veth hands it to the slave: two veth hops where the kernel driver (and
//! macvlan) has one. `bpf_redirect_peer` hands a frame from an ingress hook straight to
//! the peer of a veth in another namespace, the slave end, without the second hop. On a
//! host end, `bpf_redirect` hands what a slave sends to the wire straight to the
//! master's egress (L2), and `bpf_redirect_neigh` routes what it sends out (L3 egress,
//! spec §4.2 step 3) in the master's namespace as the driver does: the route
//! lookup with oif = master, `FLOWI_FLAG_ANYSRC`, mark and TOS; only unicast and local
//! routes; neighbour resolution on the master; TTL unchanged; a route failure counted in
//! the master's `tx_errors`. Such packets pass no netfilter hook of the master's
//! namespace (its tc egress and qdisc, yes).
//!
//! The fast path takes only frames whose fate `decide()` and the nftables program agree
//! on, and only the plainest of them; everything else continues to that program
//! (`TCX_NEXT`) unchanged, so the two can never disagree about where a frame goes:
//!
//! * no VLAN tag beside the frame;
//! * on a host end, the source MAC is the master's (the spoof check), the destination
//!   MAC not a group address (those are userspace's: fan-out, L3's drop);
//! * to a slave: the destination MAC is the master's (so the slave sees `PACKET_HOST`
//!   whichever way the frame came); on a host end only in ports where a slave's unicast
//!   to another slave is forwarded at all (not `private`, not the source guard); on the
//!   master not in L3S (its ingress must go through the master's namespace);
//! * to the wire (L2, [`Spec`]): unicast to another MAC, or any unicast in `vepa`; not
//!   with the source guard (its ports have no host-end program in L2);
//! * routed (L3), or handed to the master namespace's stack (L3S, see below): IPv4 or
//!   IPv6 to an address that is no slave's (any, in `vepa`) and not the master namespace's own (the local map: every address of every device
//!   there, `::1`; and 127.0.0.0/8), because `bpf_redirect_neigh` sends a local
//!   destination out of the master with zero MACs; nor what the master's namespace
//!   routes as broadcast or multicast (the local map also holds the IPv4 subnets'
//!   broadcast and network addresses; 224.0.0.0/3), which the kernel would refuse and
//!   count only in the master's `tx_errors`, where the daemon counts it for the slave; with the source guard, only from an
//!   address of the sending slave's own (the slaves' map, looked up by source);
//! * an IPv4 header that passes the checks of spec §3 (version, IHL, total length) or an
//!   IPv6 fixed header with version 6, in the linear part of the frame; not IPv6 ICMP
//!   from `::` (keyed by its target, spec §3: the nftables program's business);
//! * to a slave, an address in the slaves' map whose entry allows a peer redirect: only
//!   slaves that are up and whose slave end is in another namespace (the kernel refuses a
//!   peer redirect within one namespace; the nftables program serves those).
//!
//! L3S egress must pass the master namespace's netfilter: a host end's program gives
//! such a packet `PACKET_HOST`, adds one to its TTL or hop limit (the IPv4 header
//! checksum mended) and passes it on (`TC_ACT_OK`); the nftables program lets
//! `PACKET_HOST` IP frames of L3S ports into the stack, which forwards them out of the
//! master (PREROUTING, FORWARD, POSTROUTING: conntrack and NAT), taking the one off
//! again. The host end forwards (`ipvlan_datapath`'s kernel `l3s` sets it up, with the
//! routes back to the slaves). A frame the program leaves alone stays `PACKET_OTHERHOST`,
//! which the nftables program does not let in: the daemon's.
//!
//! The slaves' maps hold every address of the port's table, valued [`SlaveEntry`]. The
//! programs are plain data: the maps' file descriptors are parameters.

use crate::{Flags, MacAddr, Mode};

/// One eBPF instruction, encoded as the kernel reads it (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.dst & 0x0f) | (self.src << 4);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

/// `insns` as the kernel takes them (`bpf(BPF_PROG_LOAD)`'s instruction array).
pub fn encode(insns: &[Insn]) -> Vec<[u8; 8]> {
    insns.iter().map(|i| i.to_bytes()).collect()
}

// Instruction classes, sizes, modes and operations (include/uapi/linux/bpf.h).
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const ALU64: u8 = 0x07;
const W: u8 = 0x00;
const H: u8 = 0x08;
const B: u8 = 0x10;
const DW: u8 = 0x18;
const MEM: u8 = 0x60;
const ABS: u8 = 0x20;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const SUB: u8 = 0x10;
const OR: u8 = 0x40;
const AND: u8 = 0x50;
const LSH: u8 = 0x60;
const RSH: u8 = 0x70;
const MOV: u8 = 0xb0;
const END: u8 = 0xd0;
const TO_BE: u8 = 0x08;
const JEQ: u8 = 0x10;
const JGT: u8 = 0x20;
const JGE: u8 = 0x30;
const JNE: u8 = 0x50;
const JLT: u8 = 0xa0;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
const JA: u8 = 0x00;
/// `src` of a 64-bit immediate load that names a map by file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_REDIRECT: i32 = 23;
const HELPER_REDIRECT_NEIGH: i32 = 152;
const HELPER_REDIRECT_PEER: i32 = 155;
const HELPER_L3_CSUM_REPLACE: i32 = 10;
const HELPER_SKB_CHANGE_TYPE: i32 = 32;
/// `PACKET_HOST`: the frame is for this host (its stack takes it).
const PACKET_HOST: i32 = 0;
/// `TC_ACT_OK`: on into the stack (the nftables ingress hook first).
const TC_ACT_OK: i32 = 0;

/// `struct __sk_buff` offsets.
const SKB_LEN: i16 = 0;
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_IFINDEX: i16 = 40;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// `TCX_NEXT`: on to the next program, then the nftables ingress hook.
const TCX_NEXT: i32 = -1;

/// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const FP: u8 = 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Pass,
    V4,
    V6,
    /// The destination was looked up among the slaves (R0: the entry or null).
    Found,
    /// L2: both MACs are the master's.
    SameMac,
    /// L3/L3S: the destination MAC is not the master's (the flag at [`DST_IS_MASTER`] stays 0).
    DstOther,
    /// L3: the destination is no slave's; R7 the IP version.
    Route,
    RouteV6,
    /// The keys are on the stack: is the destination local?
    LocalCheck,
    LocalV6,
    Send,
    /// Host access: the destination is not the master namespace's.
    NotLocal,
    GuardCheck,
    /// IPv6 that is not ICMPv6 from `::`: keyed by its destination.
    V6Keyed,
    /// L3S egress: the IPv6 hop limit goes up.
    HopV6,
    /// L3S egress: to the master namespace's stack.
    Host,
    /// L2: a unicast destination MAC other than the master's.
    L2Wire,
}

/// A straight-line assembler with forward jumps to labels.
struct Asm {
    insns: Vec<Insn>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Asm {
    fn new() -> Self {
        Self {
            insns: Vec::new(),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn emit(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            dst,
            src,
            off,
            imm,
        });
    }

    fn label(&mut self, l: Label) {
        self.labels.push((l, self.insns.len()));
    }

    fn mov_reg(&mut self, dst: u8, src: u8) {
        self.emit(ALU64 | MOV | X, dst, src, 0, 0);
    }

    fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.emit(ALU64 | MOV | K, dst, 0, 0, imm);
    }

    fn alu_imm(&mut self, op: u8, dst: u8, imm: i32) {
        self.emit(ALU64 | op | K, dst, 0, 0, imm);
    }

    fn load(&mut self, size: u8, dst: u8, src: u8, off: i16) {
        self.emit(LDX | MEM | size, dst, src, off, 0);
    }

    fn store(&mut self, size: u8, dst: u8, off: i16, src: u8) {
        self.emit(STX | MEM | size, dst, src, off, 0);
    }

    fn store_imm(&mut self, size: u8, dst: u8, off: i16, imm: i32) {
        self.emit(ST | MEM | size, dst, 0, off, imm);
    }

    fn alu_reg(&mut self, op: u8, dst: u8, src: u8) {
        self.emit(ALU64 | op | X, dst, src, 0, 0);
    }

    /// `if dst OP imm goto l`, comparing the low 32 bits (`JMP32`).
    fn jmp32_imm(&mut self, op: u8, dst: u8, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.emit(JMP32 | op | K, dst, 0, 0, imm);
    }

    /// `if dst OP imm goto l` on 64 bits.
    fn jmp_imm(&mut self, op: u8, dst: u8, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.emit(JMP | op | K, dst, 0, 0, imm);
    }

    /// `if dst OP src goto l` on 64 bits.
    fn jmp_reg(&mut self, op: u8, dst: u8, src: u8, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.emit(JMP | op | X, dst, src, 0, 0);
    }

    fn goto(&mut self, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.emit(JMP | JA, 0, 0, 0, 0);
    }

    fn load_map(&mut self, dst: u8, fd: i32) {
        self.emit(LD | DW, dst, PSEUDO_MAP_FD, 0, fd);
        self.emit(0, 0, 0, 0, 0);
    }

    fn call(&mut self, helper: i32) {
        self.emit(JMP | CALL, 0, 0, 0, helper);
    }

    fn exit(&mut self) {
        self.emit(JMP | EXIT, 0, 0, 0, 0);
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, l) in std::mem::take(&mut self.fixups) {
            let target = self
                .labels
                .iter()
                .find(|(x, _)| *x == l)
                .map(|(_, i)| *i)
                .expect("every label used is placed");
            let off = i64::try_from(target).unwrap() - i64::try_from(at).unwrap() - 1;
            self.insns[at].off =
                i16::try_from(off).expect("a jump reaches at most 32767 instructions");
        }
        self.insns
    }
}

/// Where a fast-path program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// The master's ingress: frames from the wire.
    Master,
    /// A host end's ingress: frames its slave sent.
    HostEnd,
}

/// What a port's programs are built for: a change rebuilds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub mode: Mode,
    pub flags: Flags,
    pub source_guard: bool,
    /// Host access (`PortSnapshot::host_access`): in L3 and L3S, what a slave sends to
    /// an address of the master's namespace is the host end's stack's (the nftables
    /// program accepts it there; in L3S the host end's program makes it `PACKET_HOST`
    /// first, its TTL unchanged), so the socket filter does not copy it to userspace.
    pub host_access: bool,
    /// The master's MAC, which every slave carries.
    pub mac: MacAddr,
    /// The master's ifindex: where a host end sends to the wire and routes.
    pub master: u32,
}

/// The maps' file descriptors: the slaves' (address → [`SlaveEntry`]) and the master
/// namespace's own addresses (address → [`LOCAL_VALUE`]), per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Maps {
    pub slaves4: i32,
    pub slaves6: i32,
    pub local4: i32,
    pub local6: i32,
}

/// A slaves' map value: the slave's host end, and whether a frame for it may be handed
/// to its slave end directly (the slave is up and in another namespace than the master).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlaveEntry {
    pub host_index: u32,
    pub peer: bool,
}

impl SlaveEntry {
    /// `struct { u32 host_index; u32 peer; }`.
    pub const SIZE: usize = 8;

    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[..4].copy_from_slice(&self.host_index.to_ne_bytes());
        b[4..].copy_from_slice(&u32::from(self.peer).to_ne_bytes());
        b
    }
}

/// The local maps' value (only the key matters).
pub const LOCAL_VALUE: [u8; 1] = [1];

/// Whether a port described by `spec` has a fast path at `at` (see the module doc).
pub fn wanted(at: Attach, spec: &Spec) -> bool {
    match at {
        Attach::Master => spec.mode != Mode::L3s,
        Attach::HostEnd => match spec.mode {
            Mode::L2 => !spec.source_guard,
            Mode::L3 => true,
            Mode::L3s => true,
        },
    }
}

/// How a program reads the frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `sched_cls`: direct packet access between `data` (R2) and `data_end` (R3), the
    /// linear part only; values as they are in memory.
    Direct,
    /// Socket filters, which have no direct access: `LD_ABS` loads (any part of the
    /// frame, values in host order; they clobber R1-R5), bounded by `skb->len` first.
    Abs,
}

/// What a program does with a frame the fast path takes, and with the rest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// tc: hand it on (`bpf_redirect_peer`, `bpf_redirect`, `bpf_redirect_neigh`); the
    /// rest continues.
    Redirect,
    /// A host end's packet socket: do not copy it to userspace (the kernel switches
    /// it); copy the rest whole.
    Skip,
}

/// Bytes a socket filter keeps of a frame it accepts: all of any frame.
pub const SOCKET_ACCEPT: i32 = 0x0004_0000;

/// Stack slots (offsets from the frame pointer).
const KEY4: i16 = -4;
const KEY6: i16 = -16;
const SRC6: i16 = -32;
const SRC4: i16 = -36;
/// L3 host ends: 1 when the destination MAC is the master's.
const DST_IS_MASTER: i16 = -40;

impl Asm {
    /// Goes to `Pass` unless the frame's first `len` bytes can be read.
    fn need(&mut self, acc: Access, len: i32) {
        match acc {
            Access::Direct => {
                self.mov_reg(R4, R2);
                self.alu_imm(ADD, R4, len);
                self.jmp_reg(JGT, R4, R3, Label::Pass);
            }
            Access::Abs => {
                self.load(W, R0, R6, SKB_LEN);
                self.jmp_imm(JLT, R0, len, Label::Pass);
            }
        }
    }

    /// R0 = the `size` bytes at frame offset `off`: as in memory (Direct) or in host
    /// order (Abs).
    fn ld(&mut self, acc: Access, size: u8, off: i16) {
        match acc {
            Access::Direct => self.load(size, R0, R2, off),
            Access::Abs => self.emit(LD | ABS | size, 0, 0, 0, i32::from(off)),
        }
    }

    /// R0 as the bytes were in the frame (network order), for a map key.
    fn as_in_frame(&mut self, acc: Access, bits: i32) {
        if acc == Access::Abs {
            self.emit(ALU | END | TO_BE, R0, 0, 0, bits);
        }
    }

    /// R0 in host order, for arithmetic.
    fn as_number(&mut self, acc: Access, bits: i32) {
        if acc == Access::Direct {
            self.emit(ALU | END | TO_BE, R0, 0, 0, bits);
        }
    }

    /// Goes to `otherwise` unless the 6 bytes at frame offset `off` are `mac`.
    fn expect_mac(&mut self, acc: Access, off: i16, mac: &MacAddr, otherwise: Label) {
        let [a, b, c, d, e, f] = mac.0;
        let (w, h) = ([a, b, c, d], [e, f]);
        let (w, h) = match acc {
            Access::Direct => (u32::from_le_bytes(w), u16::from_le_bytes(h)),
            Access::Abs => (u32::from_be_bytes(w), u16::from_be_bytes(h)),
        };
        self.ld(acc, W, off);
        self.jmp32_imm(JNE, R0, w.cast_signed(), otherwise); // compared as 32 bits
        self.ld(acc, H, off + 4);
        self.jmp32_imm(JNE, R0, i32::from(h), otherwise);
    }

    /// Copies the `words` 32-bit words at frame offset `off` to the stack at `to`, as
    /// they are in the frame.
    fn key(&mut self, acc: Access, off: i16, words: i16, to: i16) {
        for i in 0..words {
            self.ld(acc, W, off + 4 * i);
            self.as_in_frame(acc, 32);
            self.store(W, FP, to + 4 * i, R0);
        }
    }

    /// R0 = the entry for the key at stack offset `key` in map `fd`, or null.
    fn lookup(&mut self, fd: i32, key: i16) {
        self.load_map(R1, fd);
        self.mov_reg(R2, FP);
        self.alu_imm(ADD, R2, i32::from(key));
        self.call(HELPER_MAP_LOOKUP);
    }

    /// The end of a taken frame: `helper` with the registers already set (Redirect),
    /// or not copied (Skip).
    fn take(&mut self, verdict: Verdict, helper: i32) {
        match verdict {
            Verdict::Redirect => self.call(helper),
            Verdict::Skip => self.mov_imm(R0, 0),
        }
        self.exit();
    }
}

impl Asm {
    /// L3S egress: the packet (R7 its IP version) goes up the master namespace's stack
    /// on the host end (`PACKET_HOST`), which forwards it out of the master through
    /// PREROUTING, FORWARD and POSTROUTING. Its TTL or hop limit goes up by one first,
    /// so the router sees it as the slave sent it (forwarding takes the one off again);
    /// one sent at 255 arrives with 254.
    fn up_the_stack(&mut self, acc: Access, verdict: Verdict) {
        if verdict == Verdict::Skip {
            self.take(verdict, 0);
            return;
        }
        debug_assert!(acc == Access::Direct);
        // The lookups clobbered the frame's pointers.
        self.load(W, R2, R6, SKB_DATA);
        self.load(W, R3, R6, SKB_DATA_END);
        self.jmp_imm(JEQ, R7, 6, Label::HopV6);
        self.need(acc, 34);
        // TTL and protocol, as they are in memory: what the checksum helper takes.
        self.load(H, R8, R2, 22);
        self.load(B, R0, R2, 22);
        self.jmp_imm(JEQ, R0, 255, Label::Host);
        self.alu_imm(ADD, R0, 1);
        self.store(B, R2, 22, R0);
        self.load(H, R4, R2, 22);
        self.mov_reg(R1, R6);
        self.mov_imm(R2, 24);
        self.mov_reg(R3, R8);
        self.mov_imm(R5, 2);
        self.call(HELPER_L3_CSUM_REPLACE);
        self.goto(Label::Host);
        self.label(Label::HopV6);
        self.need(acc, 54);
        self.load(B, R0, R2, 21);
        self.jmp_imm(JEQ, R0, 255, Label::Host);
        self.alu_imm(ADD, R0, 1);
        self.store(B, R2, 21, R0);
        self.label(Label::Host);
        self.mov_reg(R1, R6);
        self.mov_imm(R2, PACKET_HOST);
        self.call(HELPER_SKB_CHANGE_TYPE);
        self.mov_imm(R0, TC_ACT_OK);
        self.exit();
    }
}

/// The program for `at` in the port `spec` describes: a `sched_cls` program (tcx on the
/// master, a direct-action filter on the host ends).
pub fn program(at: Attach, spec: &Spec, maps: &Maps) -> Vec<Insn> {
    build(at, Access::Direct, Verdict::Redirect, spec, maps)
}

/// The socket filter for a host end's packet socket in an L3 or L3S port with a
/// host-end fast path: what the fast path takes is not copied to userspace, everything
/// else is, whole ([`SOCKET_ACCEPT`]). (The kernel backend's L3 host-end sockets see
/// the frames the daemon routes: local destinations, what the program leaves alone.)
pub fn socket_filter(spec: &Spec, maps: &Maps) -> Vec<Insn> {
    build(Attach::HostEnd, Access::Abs, Verdict::Skip, spec, maps)
}

fn build(at: Attach, acc: Access, verdict: Verdict, spec: &Spec, maps: &Maps) -> Vec<Insn> {
    let host = at == Attach::HostEnd;
    let l3 = spec.mode != Mode::L2;
    // Slave-to-slave unicast is forwarded (spec §4.1, §4.2): to the owner.
    let to_slaves = !host || (spec.flags == Flags::Bridge && !spec.source_guard);
    // L3 egress is routed here; L3S egress is handed to the master namespace's stack.
    let routes = host && spec.mode != Mode::L2;
    // In vepa every unicast is routed, a slave's address too (§4.2 step 2).
    let lookup = !(routes && spec.flags == Flags::Vepa);
    let guard = routes && spec.source_guard;

    let mut a = Asm::new();
    a.mov_reg(R6, R1);
    a.load(W, R0, R6, SKB_VLAN_PRESENT);
    a.jmp_imm(JNE, R0, 0, Label::Pass);
    if acc == Access::Direct {
        a.load(W, R2, R6, SKB_DATA);
        a.load(W, R3, R6, SKB_DATA_END);
    }
    a.need(acc, 14);
    if host {
        a.expect_mac(acc, 6, &spec.mac, Label::Pass);
        a.ld(acc, B, 0);
        a.alu_imm(AND, R0, 1);
        a.jmp_imm(JNE, R0, 0, Label::Pass);
        if l3 {
            a.store_imm(W, FP, DST_IS_MASTER, 0);
            a.expect_mac(acc, 0, &spec.mac, Label::DstOther);
            a.store_imm(W, FP, DST_IS_MASTER, 1);
            a.label(Label::DstOther);
        } else {
            // L2, spec §4.1: unicast to another MAC (any, in vepa) goes to the wire.
            if spec.flags != Flags::Vepa {
                a.expect_mac(acc, 0, &spec.mac, Label::L2Wire);
                if to_slaves {
                    a.goto(Label::SameMac);
                } else {
                    a.goto(Label::Pass);
                }
                a.label(Label::L2Wire);
            }
            a.mov_imm(R1, spec.master.cast_signed()); // the helper reads a u32 ifindex
            a.mov_imm(R2, 0);
            a.take(verdict, HELPER_REDIRECT);
            if !to_slaves {
                return finish(a, verdict);
            }
            a.label(Label::SameMac);
        }
    } else {
        a.expect_mac(acc, 0, &spec.mac, Label::Pass);
    }
    a.ld(acc, H, 12);
    let ethertype = |t: [u8; 2]| {
        i32::from(match acc {
            Access::Direct => u16::from_le_bytes(t),
            Access::Abs => u16::from_be_bytes(t),
        })
    };
    a.jmp32_imm(JEQ, R0, ethertype([0x08, 0x00]), Label::V4);
    a.jmp32_imm(JEQ, R0, ethertype([0x86, 0xdd]), Label::V6);
    a.goto(Label::Pass);

    // IPv4: version 4, IHL at least 5, total length at least the header and at most
    // what the frame holds (spec §3, as netfilter's own validation checks it).
    a.label(Label::V4);
    a.need(acc, 34);
    a.ld(acc, B, 14);
    a.mov_reg(R7, R0);
    a.alu_imm(AND, R7, 0x0f);
    a.jmp_imm(JLT, R7, 5, Label::Pass);
    a.alu_imm(RSH, R0, 4);
    a.jmp_imm(JNE, R0, 4, Label::Pass);
    a.ld(acc, H, 16);
    a.as_number(acc, 16);
    a.mov_reg(R8, R0);
    a.alu_imm(LSH, R7, 2);
    a.jmp_reg(JLT, R8, R7, Label::Pass);
    a.load(W, R9, R6, SKB_LEN);
    a.alu_imm(SUB, R9, 14);
    a.jmp_reg(JGT, R8, R9, Label::Pass);
    a.key(acc, 30, 1, KEY4);
    if routes {
        // 127.0.0.0/8 is local to every namespace; multicast and the limited broadcast
        // are refused by the route-type check, which the daemon counts for the slave.
        a.ld(acc, B, 30);
        a.jmp_imm(JEQ, R0, 127, Label::Pass);
        a.jmp_imm(JGE, R0, 224, Label::Pass);
    }
    if guard {
        a.key(acc, 26, 1, SRC4);
    }
    a.mov_imm(R7, 4);
    if lookup {
        a.lookup(maps.slaves4, KEY4);
        a.goto(Label::Found);
    } else {
        a.goto(Label::Route);
    }

    // IPv6: the fixed header, version 6; the key is the destination, except for ICMPv6
    // from `::` (spec §3).
    a.label(Label::V6);
    a.need(acc, 54);
    a.ld(acc, B, 14);
    a.alu_imm(RSH, R0, 4);
    a.jmp_imm(JNE, R0, 6, Label::Pass);
    a.ld(acc, B, 20);
    a.jmp_imm(JNE, R0, 58, Label::V6Keyed);
    a.mov_imm(R9, 0);
    for i in 0..4 {
        a.ld(acc, W, 22 + 4 * i);
        a.alu_reg(OR, R9, R0);
    }
    a.jmp_imm(JEQ, R9, 0, Label::Pass);
    a.label(Label::V6Keyed);
    a.key(acc, 38, 4, KEY6);
    if guard {
        a.key(acc, 22, 4, SRC6);
    }
    a.mov_imm(R7, 6);
    if lookup {
        a.lookup(maps.slaves6, KEY6);

        // A slave's address.
        a.label(Label::Found);
        a.jmp_imm(JEQ, R0, 0, if routes { Label::Route } else { Label::Pass });
        if !to_slaves {
            a.goto(Label::Pass);
        } else {
            a.load(W, R1, R0, 4);
            a.jmp_imm(JEQ, R1, 0, Label::Pass);
            if routes {
                a.load(W, R1, FP, DST_IS_MASTER);
                a.jmp_imm(JEQ, R1, 0, Label::Pass);
            }
            a.load(W, R1, R0, 0);
            a.mov_imm(R2, 0);
            a.take(verdict, HELPER_REDIRECT_PEER);
        }
    }

    if routes {
        // Routed out through the master's namespace (spec §4.2 step 3).
        a.label(Label::Route);
        if guard {
            a.jmp_imm(JEQ, R7, 6, Label::RouteV6);
            a.lookup(maps.slaves4, SRC4);
            a.goto(Label::GuardCheck);
            a.label(Label::RouteV6);
            a.lookup(maps.slaves6, SRC6);
            a.label(Label::GuardCheck);
            a.jmp_imm(JEQ, R0, 0, Label::Pass);
            a.load(W, R1, R0, 0);
            a.load(W, R2, R6, SKB_IFINDEX);
            a.jmp_reg(JNE, R1, R2, Label::Pass);
        }
        a.label(Label::LocalCheck);
        a.jmp_imm(JEQ, R7, 6, Label::LocalV6);
        a.lookup(maps.local4, KEY4);
        a.goto(Label::Send);
        a.label(Label::LocalV6);
        a.lookup(maps.local6, KEY6);
        a.label(Label::Send);
        if spec.host_access {
            match verdict {
                // The host end's stack takes it (see `Spec::host_access`): not copied.
                Verdict::Skip => {
                    a.jmp_imm(JEQ, R0, 0, Label::NotLocal);
                    a.mov_imm(R0, 0);
                    a.exit();
                    a.label(Label::NotLocal);
                }
                // L3S: up the stack as it is (delivered, not forwarded: the TTL stays).
                Verdict::Redirect if spec.mode == Mode::L3s => {
                    a.jmp_imm(JNE, R0, 0, Label::Host);
                }
                Verdict::Redirect => {}
            }
        }
        a.jmp_imm(JNE, R0, 0, Label::Pass);
        if spec.mode == Mode::L3s {
            a.up_the_stack(acc, verdict);
        } else {
            a.mov_imm(R1, spec.master.cast_signed()); // the helper reads a u32 ifindex
            a.mov_imm(R2, 0);
            a.mov_imm(R3, 0);
            a.mov_imm(R4, 0);
            a.take(verdict, HELPER_REDIRECT_NEIGH);
        }
    }
    finish(a, verdict)
}

/// The frames the program does not take: on to the next program (tc), copied whole
/// (socket filter).
fn finish(mut a: Asm, verdict: Verdict) -> Vec<Insn> {
    a.label(Label::Pass);
    a.mov_imm(
        R0,
        match verdict {
            Verdict::Redirect => TCX_NEXT,
            Verdict::Skip => SOCKET_ACCEPT,
        },
    );
    a.exit();
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

    #[test]
    fn encoding_matches_the_kernel_layout() {
        // r1 = *(u32 *)(r6 + 76)
        let i = Insn {
            code: LDX | MEM | W,
            dst: 1,
            src: 6,
            off: 76,
            imm: 0,
        };
        assert_eq!(i.to_bytes(), [0x61, 0x61, 76, 0, 0, 0, 0, 0]);
        // r0 = -1
        let i = Insn {
            code: ALU64 | MOV | K,
            dst: 0,
            src: 0,
            off: 0,
            imm: -1,
        };
        assert_eq!(i.to_bytes(), [0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    }

    fn spec(mode: Mode, flags: Flags, source_guard: bool) -> Spec {
        Spec {
            mode,
            flags,
            source_guard,
            host_access: false,
            mac: M,
            master: 7,
        }
    }

    const MAPS: Maps = Maps {
        slaves4: 3,
        slaves6: 4,
        local4: 5,
        local6: 6,
    };

    fn calls(p: &[Insn]) -> Vec<i32> {
        p.iter()
            .filter(|i| i.code == JMP | CALL && i.imm != HELPER_MAP_LOOKUP)
            .map(|i| i.imm)
            .collect()
    }

    fn maps_named(p: &[Insn]) -> Vec<i32> {
        p.iter()
            .filter(|i| i.code == LD | DW && i.src == PSEUDO_MAP_FD)
            .map(|i| i.imm)
            .collect()
    }

    const SHAPES: [(Mode, Flags, bool); 11] = [
        (Mode::L2, Flags::Bridge, false),
        (Mode::L2, Flags::Private, false),
        (Mode::L2, Flags::Vepa, false),
        (Mode::L3, Flags::Bridge, false),
        (Mode::L3, Flags::Private, false),
        (Mode::L3, Flags::Vepa, false),
        (Mode::L3, Flags::Private, true),
        (Mode::L3, Flags::Bridge, true),
        (Mode::L3s, Flags::Bridge, false),
        (Mode::L3s, Flags::Vepa, false),
        (Mode::L3s, Flags::Private, true),
    ];

    #[test]
    fn every_jump_lands_inside_the_program_and_every_path_ends_in_exit() {
        for (mode, flags, guard) in SHAPES {
            let s = spec(mode, flags, guard);
            let mut progs = vec![program(Attach::Master, &s, &MAPS)];
            if wanted(Attach::HostEnd, &s) {
                progs.push(program(Attach::HostEnd, &s, &MAPS));
                progs.push(socket_filter(&s, &MAPS));
            }
            for p in progs {
                assert_eq!(p.last().unwrap().code, JMP | EXIT);
                // Every instruction is reached: by falling through from one that is
                // not an exit or an unconditional jump, or by a jump (the verifier
                // refuses unreachable instructions).
                let mut reached = vec![false; p.len()];
                reached[0] = true;
                for (i, insn) in p.iter().enumerate() {
                    let class = insn.code & 0x07;
                    let op = insn.code & 0xf0;
                    let wide = insn.code == LD | DW;
                    if (class == JMP || class == JMP32) && op != CALL && op != EXIT {
                        let t = i64::try_from(i).unwrap() + 1 + i64::from(insn.off);
                        assert!(insn.off >= 0, "forward jumps only, at {i}");
                        let t = usize::try_from(t).unwrap();
                        assert!(t < p.len(), "jump at {i} leaves the program");
                        reached[t] = true;
                    }
                    let falls = !(class == JMP && (op == EXIT || op == JA));
                    if falls && i + 1 < p.len() {
                        let next = if wide { i + 2 } else { i + 1 };
                        if next < p.len() {
                            reached[next] = true;
                        }
                    }
                    if wide {
                        reached[i + 1] = true;
                    }
                }
                if let Some(i) = reached.iter().position(|r| !r) {
                    panic!("{mode} {flags} guard={guard}: instruction {i} is unreachable");
                }
            }
        }
    }

    #[test]
    fn a_host_end_also_checks_the_source_mac() {
        let macs = |at| {
            program(at, &spec(Mode::L3, Flags::Bridge, false), &MAPS)
                .iter()
                .filter(|i| i.code == LDX | MEM | H && (i.off == 4 || i.off == 10))
                .count()
        };
        assert_eq!(macs(Attach::Master), 1);
        assert_eq!(macs(Attach::HostEnd), 2);
    }

    #[test]
    fn each_attachment_hands_frames_on_as_its_mode_says() {
        use Attach::*;
        let s = spec(Mode::L2, Flags::Bridge, false);
        assert_eq!(calls(&program(Master, &s, &MAPS)), [HELPER_REDIRECT_PEER]);
        assert_eq!(maps_named(&program(Master, &s, &MAPS)), [3, 4]);
        // L2: to the wire, to another slave.
        assert_eq!(
            calls(&program(HostEnd, &s, &MAPS)),
            [HELPER_REDIRECT, HELPER_REDIRECT_PEER]
        );
        // Private and vepa: the wire only, no lookup at all.
        for flags in [Flags::Private, Flags::Vepa] {
            let p = program(HostEnd, &spec(Mode::L2, flags, false), &MAPS);
            assert_eq!(calls(&p), [HELPER_REDIRECT]);
            assert!(maps_named(&p).is_empty());
        }
        // L3: another slave, else routed unless local.
        let p = program(HostEnd, &spec(Mode::L3, Flags::Bridge, false), &MAPS);
        assert_eq!(calls(&p), [HELPER_REDIRECT_PEER, HELPER_REDIRECT_NEIGH]);
        assert_eq!(maps_named(&p), [3, 4, 5, 6]);
        // The master's ifindex, unchanged, is what it routes through.
        let at = p
            .iter()
            .position(|i| i.code == JMP | CALL && i.imm == HELPER_REDIRECT_NEIGH)
            .unwrap();
        assert!(
            p[..at]
                .iter()
                .rev()
                .take(4)
                .any(|i| i.dst == R1 && i.imm == 7)
        );
        // Private: slaves' addresses are the nftables program's (counted drops).
        let p = program(HostEnd, &spec(Mode::L3, Flags::Private, false), &MAPS);
        assert_eq!(calls(&p), [HELPER_REDIRECT_NEIGH]);
        // Vepa routes every unicast: no slave lookup.
        let p = program(HostEnd, &spec(Mode::L3, Flags::Vepa, false), &MAPS);
        assert_eq!(calls(&p), [HELPER_REDIRECT_NEIGH]);
        assert_eq!(maps_named(&p), [5, 6]);
        // The guard looks the source up among the slaves and compares the host end.
        let p = program(HostEnd, &spec(Mode::L3, Flags::Private, true), &MAPS);
        assert_eq!(maps_named(&p), [3, 4, 3, 4, 5, 6]);
        assert!(
            p.iter()
                .any(|i| i.code == LDX | MEM | W && i.off == SKB_IFINDEX)
        );
        // L3S: another slave, else up the master namespace's stack (TTL + 1, the IPv4
        // header checksum mended) unless local.
        let p = program(HostEnd, &spec(Mode::L3s, Flags::Bridge, false), &MAPS);
        assert_eq!(
            calls(&p),
            [
                HELPER_REDIRECT_PEER,
                HELPER_L3_CSUM_REPLACE,
                HELPER_SKB_CHANGE_TYPE
            ]
        );
        assert_eq!(maps_named(&p), [3, 4, 5, 6]);
        assert!(!calls(&p).contains(&HELPER_REDIRECT_NEIGH));
        let f = socket_filter(&spec(Mode::L3s, Flags::Bridge, false), &MAPS);
        assert!(calls(&f).is_empty());
        assert_eq!(maps_named(&f), [3, 4, 5, 6]);
        // The socket filter takes the same frames without a helper.
        let f = socket_filter(&spec(Mode::L3, Flags::Bridge, false), &MAPS);
        assert!(calls(&f).is_empty());
        assert_eq!(maps_named(&f), [3, 4, 5, 6]);
    }

    #[test]
    fn with_host_access_the_l3_socket_filter_leaves_local_destinations_to_the_host() {
        let off = spec(Mode::L3, Flags::Bridge, false);
        let on = Spec {
            host_access: true,
            ..off
        };
        // The tc program is the same: local destinations go on to the nftables program.
        assert_eq!(
            program(Attach::HostEnd, &off, &MAPS),
            program(Attach::HostEnd, &on, &MAPS)
        );
        // The socket filter skips them (one more exit, returning 0).
        let exits = |p: &[Insn]| p.iter().filter(|i| i.code == JMP | EXIT).count();
        let (f_off, f_on) = (socket_filter(&off, &MAPS), socket_filter(&on, &MAPS));
        assert_eq!(exits(&f_on), exits(&f_off) + 1);
        assert_eq!(maps_named(&f_on), maps_named(&f_off));
    }

    #[test]
    fn slave_entries_are_laid_out_as_the_programs_read_them() {
        let e = SlaveEntry {
            host_index: 0x0102_0304,
            peer: true,
        };
        let b = e.to_bytes();
        assert_eq!(u32::from_ne_bytes(b[..4].try_into().unwrap()), 0x0102_0304);
        assert_eq!(u32::from_ne_bytes(b[4..].try_into().unwrap()), 1);
    }

    #[test]
    fn only_forwarding_ports_have_one() {
        use Attach::*;
        assert!(wanted(Master, &spec(Mode::L2, Flags::Private, true)));
        assert!(!wanted(Master, &spec(Mode::L3s, Flags::Bridge, false)));
        assert!(wanted(HostEnd, &spec(Mode::L2, Flags::Bridge, false)));
        assert!(wanted(HostEnd, &spec(Mode::L3s, Flags::Bridge, false)));
        assert!(wanted(HostEnd, &spec(Mode::L2, Flags::Private, false)));
        assert!(wanted(HostEnd, &spec(Mode::L2, Flags::Vepa, false)));
        assert!(!wanted(HostEnd, &spec(Mode::L2, Flags::Bridge, true)));
        assert!(wanted(HostEnd, &spec(Mode::L3, Flags::Private, true)));
        assert!(wanted(HostEnd, &spec(Mode::L3s, Flags::Private, false)));
        assert!(wanted(HostEnd, &spec(Mode::L3s, Flags::Bridge, true)));
    }
}

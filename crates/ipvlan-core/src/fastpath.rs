//! The kernel backend's fast path: a BPF program on `tcx` ingress, assembled here.
//!
//! The nftables program of [`crate::compile`] `fwd`s a frame to the target slave's host
//! end, whose veth hands it to the slave: two veth hops where the kernel driver (and
//! macvlan) has one. `bpf_redirect_peer` hands a frame from an ingress hook straight to
//! the peer of a veth in another namespace, the slave end, without the second hop.
//!
//! The fast path takes only the frames the nftables program would `fwd` to a slave,
//! and only the plainest of them; everything else continues to that program (`TCX_NEXT`)
//! unchanged, so the two can never disagree about where a frame goes:
//!
//! * no VLAN tag beside the frame; the destination MAC is the master's (so no group
//!   address, and the slave sees `PACKET_HOST` whichever way the frame came);
//! * on a host end, the source MAC is the master's too (the spoof check) — and only in
//!   ports where a slave's unicast to another slave is forwarded at all: not `private`,
//!   not `vepa`, not with the source guard;
//! * on the master, not in L3S (its ingress must go through the master's namespace);
//! * an IPv4 header that passes the checks of spec §3 (version, IHL, total length) or an
//!   IPv6 fixed header with version 6, in the linear part of the frame;
//! * a destination address in the port's map, which holds only the addresses of up
//!   slaves whose slave end is in another namespace (the kernel refuses a peer
//!   redirect within one namespace; the nftables program serves those).
//!
//! The maps' value is the target's host-end ifindex. The programs are plain data: the
//! maps' file descriptors are parameters.

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
const AND: u8 = 0x50;
const LSH: u8 = 0x60;
const RSH: u8 = 0x70;
const MOV: u8 = 0xb0;
const END: u8 = 0xd0;
const TO_BE: u8 = 0x08;
const JEQ: u8 = 0x10;
const JGT: u8 = 0x20;
const JNE: u8 = 0x50;
const JLT: u8 = 0xa0;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
const JA: u8 = 0x00;
/// `src` of a 64-bit immediate load that names a map by file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_REDIRECT_PEER: i32 = 155;

/// `struct __sk_buff` offsets.
const SKB_LEN: i16 = 0;
const SKB_VLAN_PRESENT: i16 = 20;
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
    Found,
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
            self.insns[at].off = (target as i64 - at as i64 - 1) as i16;
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

/// Whether a port in this configuration has a fast path at `at` (see the module doc).
pub fn wanted(at: Attach, mode: Mode, flags: Flags, source_guard: bool) -> bool {
    match at {
        Attach::Master => mode != Mode::L3s,
        Attach::HostEnd => flags == Flags::Bridge && !source_guard,
    }
}

/// How a program reads the frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `sched_cls`: direct packet access between `data` (R2) and `data_end` (R3), the
    /// linear part only; values as they are in memory.
    Direct,
    /// Socket filters, which have no direct access: `LD_ABS` loads (any part of the
    /// frame, values in host order), bounded by `skb->len` first.
    Abs,
}

/// What a program does with a frame the fast path takes, and with the rest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// tcx: hand it to the slave end (`bpf_redirect_peer`); the rest continues.
    Redirect,
    /// A host end's packet socket: do not copy it to userspace (the kernel switches
    /// it); copy the rest whole.
    Skip,
}

/// Bytes a socket filter keeps of a frame it accepts: all of any frame.
pub const SOCKET_ACCEPT: i32 = 0x0004_0000;

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

    /// Goes to `Pass` unless the 6 bytes at frame offset `off` are `mac`.
    fn expect_mac(&mut self, acc: Access, off: i16, mac: &MacAddr) {
        let (w, h) = ([mac[0], mac[1], mac[2], mac[3]], [mac[4], mac[5]]);
        let (w, h) = match acc {
            Access::Direct => (u32::from_le_bytes(w), u16::from_le_bytes(h)),
            Access::Abs => (u32::from_be_bytes(w), u16::from_be_bytes(h)),
        };
        self.ld(acc, W, off);
        self.jmp32_imm(JNE, R0, w as i32, Label::Pass);
        self.ld(acc, H, off + 4);
        self.jmp32_imm(JNE, R0, i32::from(h), Label::Pass);
    }
}

/// The program for `at` in a port whose master's MAC is `mac`, with the maps from
/// IPv4 (`map4`) and IPv6 (`map6`) address to host-end ifindex: a `sched_cls`
/// program for tcx ingress.
pub fn program(at: Attach, mac: &MacAddr, map4: i32, map6: i32) -> Vec<Insn> {
    build(at, Access::Direct, Verdict::Redirect, mac, map4, map6)
}

/// The socket filter for a host end's packet socket in a port with a host-end fast
/// path: what the fast path takes is not copied to userspace, everything else is,
/// whole ([`SOCKET_ACCEPT`]). (The kernel backend's L3 host-end sockets must see the
/// frames to route; those for slaves are switched in the kernel.)
pub fn socket_filter(mac: &MacAddr, map4: i32, map6: i32) -> Vec<Insn> {
    build(Attach::HostEnd, Access::Abs, Verdict::Skip, mac, map4, map6)
}

fn build(
    at: Attach,
    acc: Access,
    verdict: Verdict,
    mac: &MacAddr,
    map4: i32,
    map6: i32,
) -> Vec<Insn> {
    let mut a = Asm::new();
    a.mov_reg(R6, R1);
    a.load(W, R0, R6, SKB_VLAN_PRESENT);
    a.jmp_imm(JNE, R0, 0, Label::Pass);
    if acc == Access::Direct {
        a.load(W, R2, R6, SKB_DATA);
        a.load(W, R3, R6, SKB_DATA_END);
    }
    a.need(acc, 14);
    a.expect_mac(acc, 0, mac);
    if at == Attach::HostEnd {
        a.expect_mac(acc, 6, mac);
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
    a.ld(acc, W, 30);
    a.as_in_frame(acc, 32);
    a.store(W, FP, -4, R0);
    a.load_map(R1, map4);
    a.mov_reg(R2, FP);
    a.alu_imm(ADD, R2, -4);
    a.call(HELPER_MAP_LOOKUP);
    a.goto(Label::Found);

    // IPv6: the fixed header, version 6; the key is the destination.
    a.label(Label::V6);
    a.need(acc, 54);
    a.ld(acc, B, 14);
    a.alu_imm(RSH, R0, 4);
    a.jmp_imm(JNE, R0, 6, Label::Pass);
    for i in 0..4 {
        a.ld(acc, W, 38 + 4 * i);
        a.as_in_frame(acc, 32);
        a.store(W, FP, -16 + 4 * i, R0);
    }
    a.load_map(R1, map6);
    a.mov_reg(R2, FP);
    a.alu_imm(ADD, R2, -16);
    a.call(HELPER_MAP_LOOKUP);

    a.label(Label::Found);
    a.jmp_imm(JEQ, R0, 0, Label::Pass);
    match verdict {
        Verdict::Redirect => {
            a.load(W, R1, R0, 0);
            a.mov_imm(R2, 0);
            a.call(HELPER_REDIRECT_PEER);
        }
        Verdict::Skip => a.mov_imm(R0, 0),
    }
    a.exit();

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

    const M: MacAddr = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

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

    #[test]
    fn every_jump_lands_inside_the_program_and_it_ends_in_exit() {
        for p in [
            program(Attach::Master, &M, 3, 4),
            program(Attach::HostEnd, &M, 3, 4),
            socket_filter(&M, 3, 4),
        ] {
            assert_eq!(p.last().unwrap().code, JMP | EXIT);
            for (i, insn) in p.iter().enumerate() {
                let class = insn.code & 0x07;
                let op = insn.code & 0xf0;
                if (class == JMP || class == JMP32) && op != CALL && op != EXIT {
                    let t = i as i64 + 1 + i64::from(insn.off);
                    assert!(insn.off >= 0, "forward jumps only, at {i}");
                    assert!((t as usize) < p.len(), "jump at {i} leaves the program");
                }
            }
            // Both maps are named, by their descriptors.
            let maps: Vec<i32> = p
                .iter()
                .filter(|i| i.code == LD | DW && i.src == PSEUDO_MAP_FD)
                .map(|i| i.imm)
                .collect();
            assert_eq!(maps, [3, 4]);
        }
    }

    #[test]
    fn a_host_end_also_checks_the_source_mac() {
        let macs = |at| {
            program(at, &M, 3, 4)
                .iter()
                .filter(|i| i.code == LDX | MEM | H && (i.off == 4 || i.off == 10))
                .count()
        };
        assert_eq!(macs(Attach::Master), 1);
        assert_eq!(macs(Attach::HostEnd), 2);
    }

    #[test]
    fn only_forwarding_ports_have_one() {
        use Attach::*;
        assert!(wanted(Master, Mode::L2, Flags::Private, true));
        assert!(!wanted(Master, Mode::L3s, Flags::Bridge, false));
        assert!(wanted(HostEnd, Mode::L2, Flags::Bridge, false));
        assert!(wanted(HostEnd, Mode::L3s, Flags::Bridge, false));
        assert!(!wanted(HostEnd, Mode::L2, Flags::Private, false));
        assert!(!wanted(HostEnd, Mode::L2, Flags::Vepa, false));
        assert!(!wanted(HostEnd, Mode::L2, Flags::Bridge, true));
    }
}

//! The eBPF instruction encoding and a small assembler: `Insn` as the kernel reads it,
//! the opcode, helper and `__sk_buff` constants of `include/uapi/linux/bpf.h`, and
//! `Asm`, which emits instructions and patches forward jumps to `Label`s.

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
pub(super) const LD: u8 = 0x00;
pub(super) const LDX: u8 = 0x01;
pub(super) const ST: u8 = 0x02;
pub(super) const STX: u8 = 0x03;
pub(super) const ALU: u8 = 0x04;
pub(super) const JMP: u8 = 0x05;
pub(super) const JMP32: u8 = 0x06;
pub(super) const ALU64: u8 = 0x07;
pub(super) const W: u8 = 0x00;
pub(super) const H: u8 = 0x08;
pub(super) const B: u8 = 0x10;
pub(super) const DW: u8 = 0x18;
pub(super) const MEM: u8 = 0x60;
pub(super) const ABS: u8 = 0x20;
pub(super) const K: u8 = 0x00;
pub(super) const X: u8 = 0x08;
pub(super) const ADD: u8 = 0x00;
pub(super) const SUB: u8 = 0x10;
pub(super) const OR: u8 = 0x40;
pub(super) const AND: u8 = 0x50;
pub(super) const LSH: u8 = 0x60;
pub(super) const RSH: u8 = 0x70;
pub(super) const MOV: u8 = 0xb0;
pub(super) const END: u8 = 0xd0;
pub(super) const TO_BE: u8 = 0x08;
pub(super) const JEQ: u8 = 0x10;
pub(super) const JGT: u8 = 0x20;
pub(super) const JGE: u8 = 0x30;
pub(super) const JNE: u8 = 0x50;
pub(super) const JLT: u8 = 0xa0;
pub(super) const CALL: u8 = 0x80;
pub(super) const EXIT: u8 = 0x90;
pub(super) const JA: u8 = 0x00;
/// `src` of a 64-bit immediate load that names a map by file descriptor.
pub(super) const PSEUDO_MAP_FD: u8 = 1;

pub(super) const HELPER_MAP_LOOKUP: i32 = 1;
pub(super) const HELPER_REDIRECT: i32 = 23;
pub(super) const HELPER_REDIRECT_NEIGH: i32 = 152;
pub(super) const HELPER_REDIRECT_PEER: i32 = 155;
pub(super) const HELPER_L3_CSUM_REPLACE: i32 = 10;
pub(super) const HELPER_SKB_CHANGE_TYPE: i32 = 32;
/// `PACKET_HOST`: the frame is for this host (its stack takes it).
pub(super) const PACKET_HOST: i32 = 0;
/// `TC_ACT_OK`: on into the stack (the nftables ingress hook first).
pub(super) const TC_ACT_OK: i32 = 0;

/// `struct __sk_buff` offsets.
pub(super) const SKB_LEN: i16 = 0;
pub(super) const SKB_VLAN_PRESENT: i16 = 20;
pub(super) const SKB_IFINDEX: i16 = 40;
pub(super) const SKB_DATA: i16 = 76;
pub(super) const SKB_DATA_END: i16 = 80;

/// `TCX_NEXT`: on to the next program, then the nftables ingress hook.
pub(super) const TCX_NEXT: i32 = -1;

/// Registers.
pub(super) const R0: u8 = 0;
pub(super) const R1: u8 = 1;
pub(super) const R2: u8 = 2;
pub(super) const R3: u8 = 3;
pub(super) const R4: u8 = 4;
pub(super) const R5: u8 = 5;
pub(super) const R6: u8 = 6;
pub(super) const R7: u8 = 7;
pub(super) const R8: u8 = 8;
pub(super) const R9: u8 = 9;
pub(super) const FP: u8 = 10;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Label {
    Pass,
    V4,
    V6,
    /// The destination was looked up among the slaves (R0: the entry or null).
    Found,
    /// L2: both MACs are the master's.
    SameMac,
    /// L3/L3S: the destination MAC is not the master's (the flag at
    /// [`DST_IS_MASTER`](super::steps::DST_IS_MASTER) stays 0).
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
pub(super) struct Asm {
    insns: Vec<Insn>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Asm {
    pub(super) fn new() -> Self {
        Self {
            insns: Vec::new(),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub(super) fn emit(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            dst,
            src,
            off,
            imm,
        });
    }

    pub(super) fn label(&mut self, l: Label) {
        self.labels.push((l, self.insns.len()));
    }

    pub(super) fn mov_reg(&mut self, dst: u8, src: u8) {
        self.emit(ALU64 | MOV | X, dst, src, 0, 0);
    }

    pub(super) fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.emit(ALU64 | MOV | K, dst, 0, 0, imm);
    }

    pub(super) fn alu_imm(&mut self, op: u8, dst: u8, imm: i32) {
        self.emit(ALU64 | op | K, dst, 0, 0, imm);
    }

    pub(super) fn load(&mut self, size: u8, dst: u8, src: u8, off: i16) {
        self.emit(LDX | MEM | size, dst, src, off, 0);
    }

    pub(super) fn store(&mut self, size: u8, dst: u8, off: i16, src: u8) {
        self.emit(STX | MEM | size, dst, src, off, 0);
    }

    pub(super) fn store_imm(&mut self, size: u8, dst: u8, off: i16, imm: i32) {
        self.emit(ST | MEM | size, dst, 0, off, imm);
    }

    pub(super) fn alu_reg(&mut self, op: u8, dst: u8, src: u8) {
        self.emit(ALU64 | op | X, dst, src, 0, 0);
    }

    /// `if dst OP imm goto l`, comparing the low 32 bits (`JMP32`).
    pub(super) fn jmp32_imm(&mut self, op: u8, dst: u8, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.emit(JMP32 | op | K, dst, 0, 0, imm);
    }

    /// `if dst OP imm goto l` on 64 bits.
    pub(super) fn jmp_imm(&mut self, op: u8, dst: u8, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.emit(JMP | op | K, dst, 0, 0, imm);
    }

    /// `if dst OP src goto l` on 64 bits.
    pub(super) fn jmp_reg(&mut self, op: u8, dst: u8, src: u8, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.emit(JMP | op | X, dst, src, 0, 0);
    }

    pub(super) fn goto(&mut self, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.emit(JMP | JA, 0, 0, 0, 0);
    }

    pub(super) fn load_map(&mut self, dst: u8, fd: i32) {
        self.emit(LD | DW, dst, PSEUDO_MAP_FD, 0, fd);
        self.emit(0, 0, 0, 0, 0);
    }

    pub(super) fn call(&mut self, helper: i32) {
        self.emit(JMP | CALL, 0, 0, 0, helper);
    }

    pub(super) fn exit(&mut self) {
        self.emit(JMP | EXIT, 0, 0, 0, 0);
    }

    pub(super) fn finish(mut self) -> Vec<Insn> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

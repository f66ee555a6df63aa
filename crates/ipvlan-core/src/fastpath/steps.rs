//! The steps the programs are built of: bounds checks and loads for either way of
//! reading the frame (`Access`), MAC checks, map keys and lookups, what becomes of a taken
//! frame (`Verdict`), and L3S egress up the master namespace's stack.

use crate::MacAddr;

use super::asm::{
    ABS, ADD, ALU, Asm, B, END, FP, H, HELPER_L3_CSUM_REPLACE, HELPER_MAP_LOOKUP,
    HELPER_SKB_CHANGE_TYPE, JEQ, JGT, JLT, JNE, LD, Label, PACKET_HOST, R0, R1, R2, R3, R4, R5, R6,
    R7, R8, SKB_DATA, SKB_DATA_END, SKB_LEN, TC_ACT_OK, TO_BE, W,
};

/// How a program reads the frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// `sched_cls`: direct packet access between `data` (R2) and `data_end` (R3), the
    /// linear part only; values as they are in memory.
    Direct,
    /// Socket filters, which have no direct access: `LD_ABS` loads (any part of the
    /// frame, values in host order; they clobber R1-R5), bounded by `skb->len` first.
    Abs,
}

/// What a program does with a frame the fast path takes, and with the rest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// tc: hand it on (`bpf_redirect_peer`, `bpf_redirect`, `bpf_redirect_neigh`); the
    /// rest continues.
    Redirect,
    /// A host end's packet socket: do not copy it to userspace (the kernel switches
    /// it); copy the rest whole.
    Skip,
}

/// Stack slots (offsets from the frame pointer).
pub(super) const KEY4: i16 = -4;
pub(super) const KEY6: i16 = -16;
pub(super) const SRC6: i16 = -32;
pub(super) const SRC4: i16 = -36;
/// L3 host ends: 1 when the destination MAC is the master's.
pub(super) const DST_IS_MASTER: i16 = -40;

impl Asm {
    /// Goes to `Pass` unless the frame's first `len` bytes can be read.
    pub(super) fn need(&mut self, acc: Access, len: i32) {
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
    pub(super) fn ld(&mut self, acc: Access, size: u8, off: i16) {
        match acc {
            Access::Direct => self.load(size, R0, R2, off),
            Access::Abs => self.emit(LD | ABS | size, 0, 0, 0, i32::from(off)),
        }
    }

    /// R0 as the bytes were in the frame (network order), for a map key.
    pub(super) fn as_in_frame(&mut self, acc: Access, bits: i32) {
        if acc == Access::Abs {
            self.emit(ALU | END | TO_BE, R0, 0, 0, bits);
        }
    }

    /// R0 in host order, for arithmetic.
    pub(super) fn as_number(&mut self, acc: Access, bits: i32) {
        if acc == Access::Direct {
            self.emit(ALU | END | TO_BE, R0, 0, 0, bits);
        }
    }

    /// Goes to `otherwise` unless the 6 bytes at frame offset `off` are `mac`.
    pub(super) fn expect_mac(&mut self, acc: Access, off: i16, mac: &MacAddr, otherwise: Label) {
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
    pub(super) fn key(&mut self, acc: Access, off: i16, words: i16, to: i16) {
        for i in 0..words {
            self.ld(acc, W, off + 4 * i);
            self.as_in_frame(acc, 32);
            self.store(W, FP, to + 4 * i, R0);
        }
    }

    /// R0 = the entry for the key at stack offset `key` in map `fd`, or null.
    pub(super) fn lookup(&mut self, fd: i32, key: i16) {
        self.load_map(R1, fd);
        self.mov_reg(R2, FP);
        self.alu_imm(ADD, R2, i32::from(key));
        self.call(HELPER_MAP_LOOKUP);
    }

    /// The end of a taken frame: `helper` with the registers already set (Redirect),
    /// or not copied (Skip).
    pub(super) fn take(&mut self, verdict: Verdict, helper: i32) {
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
    pub(super) fn up_the_stack(&mut self, acc: Access, verdict: Verdict) {
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

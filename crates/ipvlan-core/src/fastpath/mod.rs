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

mod asm;
mod steps;

use asm::{
    AND, Asm, B, FP, H, HELPER_REDIRECT, HELPER_REDIRECT_NEIGH, HELPER_REDIRECT_PEER, JEQ, JGE,
    JGT, JLT, JNE, LSH, Label, OR, R0, R1, R2, R3, R4, R6, R7, R8, R9, RSH, SKB_DATA, SKB_DATA_END,
    SKB_IFINDEX, SKB_LEN, SKB_VLAN_PRESENT, SUB, TCX_NEXT, W,
};
pub use asm::{Insn, encode};
use steps::{Access, DST_IS_MASTER, KEY4, KEY6, SRC4, SRC6, Verdict};

use crate::{Flags, MacAddr, Mode};

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

/// Bytes a socket filter keeps of a frame it accepts: all of any frame.
pub const SOCKET_ACCEPT: i32 = 0x0004_0000;

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
    use super::asm::{
        CALL, DW, EXIT, HELPER_L3_CSUM_REPLACE, HELPER_MAP_LOOKUP, HELPER_SKB_CHANGE_TYPE, JA, JMP,
        JMP32, LD, LDX, MEM, PSEUDO_MAP_FD,
    };
    use super::*;

    const M: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

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

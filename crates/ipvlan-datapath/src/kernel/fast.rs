//! The kernel backend's fast path (see `ipvlan_core::fastpath`): two BPF programs per
//! port, one on the master's tcx ingress and one shared by its host ends (a
//! direct-action `bpf` filter on their `clsact` ingress: deleting a device with a tcx
//! attachment costs an RCU grace period, about 14 ms a slave), and the maps they
//! read, kept in step with the port: the slaves' addresses, and the addresses of the
//! master's namespace and its IPv4 subnets' broadcast and network addresses (which
//! L3 egress must not route with `bpf_redirect_neigh`, see `ipvlan_core::fastpath`), read
//! again on every address event there ([`FastPath::local_addrs_changed`]). An address
//! added while no daemon runs is missing from the local map until one starts.
//!
//! It only ever takes frames the nftables program would forward the same way, so it is
//! an accelerator: where it cannot be loaded (a kernel without tcx or BPF) the port runs
//! on the nftables program alone, which is logged once.
//!
//! Programs stay attached when the daemon exits (see `ipvlan_sys::bpf`); a new daemon
//! replaces them in one step (the master's found by name, the host ends' filter at its
//! fixed priority), so the fast path never pauses.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv6Addr};

use crate::Backend;
use ipvlan_core::fastpath::{self, Attach, Maps, SlaveEntry, Spec};
use ipvlan_core::{Mode, PortSnapshot, SlaveId};
use ipvlan_sys::NetNs;
use ipvlan_sys::bpf::{Map, Prog, tcx_ingress_named};
use ipvlan_sys::packet::PacketSocket;
use ipvlan_sys::rtnl::Rtnl;

/// Names the programs are loaded with (and found by).
const MASTER_PROG: &str = "ipvlan_master";
const HOST_PROG: &str = "ipvlan_slave";
/// Addresses per family and port the maps hold.
const MAX_ADDRS: u32 = 1 << 16;
const LOCAL_SIZE: usize = fastpath::LOCAL_VALUE.len();

fn ours(name: &str) -> bool {
    name == MASTER_PROG || name == HOST_PROG
}

/// What the programs are built for: a change rebuilds them.
type Shape = (bool, Spec);

/// One slave as the fast path sees it.
pub(super) struct End {
    pub host_index: u32,
    /// The packet socket on the host end (in L3 and L3S given [`fastpath::socket_filter`]).
    pub sock: std::sync::Arc<PacketSocket>,
    /// The slave end is in another namespace than the master (a peer redirect within
    /// one namespace is refused by the kernel).
    pub away: bool,
}

pub(super) struct FastPath {
    /// Off for a user-backend port: then it only clears what an earlier daemon left.
    on: bool,
    map4: Map,
    map6: Map,
    local4: Map,
    local6: Map,
    /// What the local maps hold.
    locals: HashSet<IpAddr>,
    /// The local maps were filled once.
    locals_read: bool,
    shape: Option<Shape>,
    master: Option<Prog>,
    host: Option<Prog>,
    /// In L3 and L3S, the host-end sockets' filter: what `host` takes is not copied to
    /// userspace. (In L2 they only take group frames anyway.)
    sock_filter: Option<Prog>,
    /// Host ends given the current `host` program (or cleared, when there is none).
    placed: BTreeSet<u32>,
    entries: HashMap<IpAddr, SlaveEntry>,
}

impl FastPath {
    pub fn new(on: bool) -> io::Result<Self> {
        Ok(Self {
            on,
            map4: Map::hash("ipvlan_fwd4", 4, SlaveEntry::SIZE, MAX_ADDRS)?,
            map6: Map::hash("ipvlan_fwd6", 16, SlaveEntry::SIZE, MAX_ADDRS)?,
            local4: Map::hash("ipvlan_local4", 4, LOCAL_SIZE, MAX_ADDRS)?,
            local6: Map::hash("ipvlan_local6", 16, LOCAL_SIZE, MAX_ADDRS)?,
            locals: HashSet::new(),
            locals_read: false,
            shape: None,
            master: None,
            host: None,
            sock_filter: None,
            placed: BTreeSet::new(),
            entries: HashMap::new(),
        })
    }

    /// Whether it switches frames (kernel backend) or only clears leftovers.
    pub fn on(&self) -> bool {
        self.on
    }

    /// The fast path is switching this port's unicast (some of it).
    pub fn active(&self) -> bool {
        self.master.is_some() || self.host.is_some()
    }

    fn maps(&self) -> Maps {
        Maps {
            slaves4: self.map4.raw_fd(),
            slaves6: self.map6.raw_fd(),
            local4: self.local4.raw_fd(),
            local6: self.local6.raw_fd(),
        }
    }

    fn load(&self, at: Attach, spec: &Spec) -> io::Result<Prog> {
        let insns = fastpath::encode(&fastpath::program(at, spec, &self.maps()));
        let name = match at {
            Attach::Master => MASTER_PROG,
            Attach::HostEnd => HOST_PROG,
        };
        Prog::load_sched_cls(name, &insns)
    }

    /// Brings programs, attachments and maps in line with the port: `ends` are its
    /// slaves, `master` the master's ifindex, `ns` the master's namespace.
    pub fn sync(
        &mut self,
        ns: &NetNs,
        rtnl: &mut Rtnl,
        snap: &PortSnapshot,
        master: u32,
        ends: &HashMap<SlaveId, End>,
    ) -> io::Result<()> {
        let on = self.on;
        let spec = Spec {
            mode: snap.mode,
            flags: snap.flags,
            source_guard: snap.source_guard,
            host_access: snap.host_access,
            mac: snap.master_mac,
            master,
        };
        let want = |at| on && fastpath::wanted(at, &spec);
        let shape = (on, spec);
        let reshaped = self.shape != Some(shape);
        if on && !self.locals_read {
            self.local_addrs_changed(rtnl)?;
        }
        let (mut new_master, mut new_host, mut new_filter) = (None, None, None);
        if reshaped {
            if want(Attach::Master) {
                new_master = Some(self.load(Attach::Master, &spec)?);
            }
            if want(Attach::HostEnd) {
                new_host = Some(self.load(Attach::HostEnd, &spec)?);
                if snap.mode != Mode::L2 {
                    let insns = fastpath::encode(&fastpath::socket_filter(&spec, &self.maps()));
                    new_filter = Some(Prog::load_socket_filter(HOST_PROG, &insns)?);
                }
            }
        }

        // The maps first: no program may send a frame to a host end it should not.
        let wanted: HashMap<IpAddr, SlaveEntry> = snap
            .table
            .iter()
            .filter(|_| on)
            .filter_map(|(ip, id)| {
                ends.get(&id).map(|e| {
                    let entry = SlaveEntry {
                        host_index: e.host_index,
                        peer: e.away,
                    };
                    (ip, entry)
                })
            })
            .collect();
        for (ip, &entry) in &wanted {
            if self.entries.get(ip) != Some(&entry) {
                self.set(ip, Some(entry))?;
                self.entries.insert(*ip, entry);
            }
        }
        let stale: Vec<IpAddr> = self
            .entries
            .keys()
            .filter(|ip| !wanted.contains_key(ip))
            .copied()
            .collect();
        for ip in stale {
            self.set(&ip, None)?;
            self.entries.remove(&ip);
        }

        let hosts: BTreeSet<u32> = ends.values().map(|e| e.host_index).collect();
        let todo: BTreeSet<u32> = hosts
            .iter()
            .filter(|h| reshaped || !self.placed.contains(h))
            .copied()
            .collect();
        if reshaped {
            let m = new_master.as_ref();
            ns.run(|| place(master, m))??;
        }
        let h = if reshaped {
            new_host.as_ref()
        } else {
            self.host.as_ref()
        };
        for &i in &todo {
            rtnl.set_ingress_bpf(i, h.map(|p| (p.raw_fd(), HOST_PROG)))
                .map_err(io::Error::other)?;
        }
        let filter = if reshaped {
            new_filter.as_ref()
        } else {
            self.sock_filter.as_ref()
        };
        for e in ends.values().filter(|e| todo.contains(&e.host_index)) {
            match filter {
                Some(f) => e.sock.set_bpf_filter(f)?,
                // The filter of a shape that had one goes: the backend's own instead.
                None if reshaped && self.sock_filter.is_some() => {
                    e.sock.set_filter(Backend::Kernel.filters(snap.mode).1)?
                }
                None => {}
            }
        }
        if reshaped {
            self.master = new_master;
            self.host = new_host;
            self.sock_filter = new_filter;
            self.shape = Some(shape);
        }
        // Host ends that left the port were deleted, and their attachments with them.
        self.placed = hosts;
        Ok(())
    }

    /// Reads the master namespace's addresses (`rtnl`'s) into the local maps: after
    /// an address event there, and once before the first program is placed.
    pub fn local_addrs_changed(&mut self, rtnl: &mut Rtnl) -> io::Result<()> {
        if !self.on {
            return Ok(());
        }
        let mut now = HashSet::new();
        for a in rtnl.addrs().map_err(io::Error::other)? {
            now.insert(a.ip);
            // The subnet's broadcast (and network) address is routed as broadcast.
            if let IpAddr::V4(v4) = a.ip
                && a.prefix <= 30
            {
                let mask = u32::MAX << (32 - a.prefix);
                let net = u32::from(v4) & mask;
                now.insert(IpAddr::V4(net.into()));
                now.insert(IpAddr::V4((net | !mask).into()));
            }
        }
        now.insert(Ipv6Addr::LOCALHOST.into());
        for ip in now.difference(&self.locals) {
            let (map, key): (&Map, &[u8]) = match ip {
                IpAddr::V4(a) => (&self.local4, &a.octets()),
                IpAddr::V6(a) => (&self.local6, &a.octets()),
            };
            map.set(key, &fastpath::LOCAL_VALUE)?;
        }
        for ip in self.locals.difference(&now) {
            let (map, key): (&Map, &[u8]) = match ip {
                IpAddr::V4(a) => (&self.local4, &a.octets()),
                IpAddr::V6(a) => (&self.local6, &a.octets()),
            };
            map.remove(key)?;
        }
        self.locals = now;
        self.locals_read = true;
        Ok(())
    }

    fn set(&self, ip: &IpAddr, to: Option<SlaveEntry>) -> io::Result<()> {
        let value = to.map(SlaveEntry::to_bytes);
        let (map, key): (&Map, &[u8]) = match ip {
            IpAddr::V4(a) => (&self.map4, &a.octets()),
            IpAddr::V6(a) => (&self.map6, &a.octets()),
        };
        match value {
            Some(v) => map.set(key, &v),
            None => map.remove(key),
        }
    }

    /// Detaches the port's programs (the port is gone); host ends that still exist
    /// lose theirs too.
    pub fn remove(self, ns: &NetNs, rtnl: &mut Rtnl, master: u32) {
        if let Some(p) = &self.master {
            let _ = ns.run(|| p.detach_tcx_ingress(master));
        }
        if self.host.is_some() {
            for &h in &self.placed {
                let _ = rtnl.set_ingress_bpf(h, None);
            }
        }
    }
}

/// Puts `prog` (or nothing) on `ifindex`'s ingress in place of the programs of ours
/// there (this daemon's or a previous one's), in one step where there is one to
/// replace. Runs in the device's namespace.
fn place(ifindex: u32, prog: Option<&Prog>) -> io::Result<()> {
    let found = tcx_ingress_named(ifindex, ours).unwrap_or_default();
    let mut replaced = false;
    for f in &found {
        match prog {
            Some(p) if !replaced => {
                p.attach_tcx_ingress(ifindex, Some(f))?;
                replaced = true;
            }
            _ => {
                let _ = f.detach_tcx_ingress(ifindex);
            }
        }
    }
    if let (Some(p), false) = (prog, replaced) {
        p.attach_tcx_ingress(ifindex, None)?;
    }
    Ok(())
}

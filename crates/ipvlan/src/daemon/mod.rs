//! The daemon: one process serving every master in every namespace.
//!
//! It owns the ports (one per master, keyed by the master's namespace and ifindex, see
//! [`portmap`]), learns slave addresses from rtnetlink events the kernel's way, hands
//! every change to the port's datapath (`ipvlan_datapath::kernel::Datapath`: its
//! switching thread, nft tables and fast path), and answers the CLI on a Unix socket.
//! Everything runs on one control thread; each port's frames are switched on that
//! port's own thread (see `ipvlan_datapath::user`).
//!
//! Where a slave is: the slave end of a veth pair can be moved to any namespace; its
//! host end stays beside the master. The host end's `IFLA_LINK` and
//! `IFLA_LINK_NETNSID` say where the slave end is now, and one monitor socket per
//! master namespace (listening to all namespaces that have an id there) sees its
//! address, link and multicast events wherever it goes. No descriptor of a slave's
//! namespace is kept, so deleting that namespace is not prevented. A master's
//! namespace is held (sockets, a descriptor) only until its owner lets it go
//! (`released.rs`).
//!
//! The modules without system calls: [`portmap`] (the ports by key), [`error`] (what
//! can go wrong, and its words), [`control`]'s dispatch and replies, and
//! [`hostend::repair`] (what must change on a host end).
//!
//! `impl Daemon` is written in several files, one per cause of change: the event loop
//! (`event_loop.rs`), requests from the CLI (`requests.rs`), the kernel's events about
//! slaves (`events.rs`) and masters (`master.rs`), host ends repaired (`hostend.rs`),
//! adoption after a restart (`adopt.rs`), L3S plumbing (`l3s.rs`), namespaces let go
//! (`released.rs`), metrics (`metrics.rs`), and the port's life — made, published, removed — in `ports.rs`. Each
//! of them changes the ports, the watched namespaces and what subscribers are told
//! together, as one step on the control thread; splitting `Daemon` into parts borrowed
//! apart would make every handler pass the three around. The control server
//! ([`control::Control`]) is a type of its own: it never reaches into the daemon,
//! which it calls through [`control::Requests`].

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipvlan_core::{Flags, MacAddr, Mode, Port, SlaveId};
use ipvlan_datapath::kernel::{self, At, Datapath};
use ipvlan_datapath::{Backend, SlaveCounters};
use ipvlan_sys::netns::NamedWatch;
use ipvlan_sys::nfqueue::NfQueue;
use ipvlan_sys::packet::PacketSocket;
use ipvlan_sys::rtnl::{Monitor, Rtnl};
use ipvlan_sys::{NetNs, NsKey};
use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

mod adopt;
mod control;
mod error;
mod event_loop;
mod events;
mod host_access;
mod hostend;
mod l3s;
mod master;
mod metrics;
mod portmap;
mod ports;
mod released;
mod requests;

pub use adopt::Mark;
pub use error::Error;
pub use metrics::MetricsListener;

use control::Control;
use portmap::PortMap;

const LISTENER: Token = Token(0);
const METRICS: Token = Token(usize::MAX);
const NAMED: Token = Token(usize::MAX - 1);
/// First NFQUEUE number used for L3S ports.
const L3S_QUEUE_BASE: u16 = 17_000;
/// The interface alias that marks a host end as ours.
pub const ALIAS_PREFIX: &str = "ipvlan-rs:";

/// Where a slave end is, as seen from its master's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    /// The namespace's id in the master's namespace; `None` = the master's own.
    nsid: Option<i32>,
    index: u32,
}

struct SlaveRec {
    host_index: u32,
    host_name: String,
    sock: Arc<PacketSocket>,
    counters: Arc<SlaveCounters>,
    /// `None` while the slave end is between namespaces.
    loc: Option<Loc>,
    name: String,
    flags: u32,
    /// The slave end's MTU at the last look (0: not looked yet); below
    /// [`IPV6_MIN_MTU`] the kernel has IPv6 off on it.
    mtu: u32,
}

/// Below this MTU a device has no IPv6 (the kernel's `IPV6_MIN_MTU`).
const IPV6_MIN_MTU: u32 = 1280;

/// What a port in L3S mode has set up in its master's namespace.
struct L3s {
    num: u16,
    queue: Arc<NfQueue>,
}

/// A port's settings, to compare, record and restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Settings {
    mode: Mode,
    flags: Flags,
    source_guard: bool,
    host_access: bool,
}

impl Settings {
    fn of(port: &Port) -> Self {
        Self {
            mode: port.mode(),
            flags: port.flags(),
            source_guard: port.source_guard(),
            host_access: port.host_access(),
        }
    }

    fn restore(self, port: &mut Port) {
        port.apply_changelink(Some(self.mode), Some(self.flags));
        port.set_source_guard(self.source_guard);
        port.set_host_access(self.host_access);
    }
}

/// A port; its master's namespace and ifindex are its key ([`PortKey`]).
struct PortRec {
    master_name: String,
    port: Port,
    slaves: BTreeMap<SlaveId, SlaveRec>,
    /// The switching thread, the nft tables and the fast path (see
    /// `ipvlan_datapath::kernel`).
    datapath: Datapath,
    /// The mode and flags last written into the host ends' aliases.
    marked: Option<Settings>,
    /// The master was up with carrier at the last look.
    master_running: bool,
    /// Present while the port is in L3S mode.
    l3s: Option<L3s>,
    master_mtu: u32,
}

/// A master namespace the daemon watches.
struct Watched {
    ns: NetNs,
    rtnl: Rtnl,
    monitor: Monitor,
    token: Token,
    /// Where namespaces with an id here were last found.
    nsid_paths: HashMap<i32, PathBuf>,
    /// The namespace's nftables generation, as the table check follows it.
    nft_gen: kernel::Gen,
}

impl Watched {
    /// Where the datapaths of this namespace's ports work.
    fn at(&mut self) -> At<'_> {
        At {
            ns: &self.ns,
            rtnl: &mut self.rtnl,
            generation: &mut self.nft_gen,
        }
    }
}

pub struct Daemon {
    poll: Poll,
    control: Control,
    watched: HashMap<NsKey, Watched>,
    ports: PortMap<PortRec>,
    next_token: usize,
    metrics: Option<MetricsListener>,
    /// The backend new ports get.
    backend: Backend,
    /// Kernel-backend ports get the BPF fast path (see `fast`).
    fast_path: bool,
    /// How long a user-backend switching thread polls after a frame before it sleeps.
    busy_poll: Duration,
    /// This daemon's identity in the marks it leaves on host ends.
    owner: String,
    /// When the ports' nft tables were last checked (see `check_tables`).
    checked_tables: std::time::Instant,
    /// The namespace the daemon runs in: never let go (see `released.rs`).
    home: NsKey,
    /// Hears names removed from `/run/netns`, once that exists.
    named: Option<NamedWatch>,
    /// When the watched namespaces were last checked for another holder.
    checked_holders: std::time::Instant,
}

/// The IPv6 link-local address the kernel gives an ipvlan slave (spec §1.5): the
/// dev_id in place of `ff:fe`, the U/L bit left alone.
pub fn slave_link_local(mac: MacAddr, dev_id: u16) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac.0;
    let [h, l] = dev_id.to_be_bytes();
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, a, b, c, h, l, d, e, f])
}

/// The classic EUI-64 link-local a veth with this MAC generates by itself.
fn eui64_link_local(mac: MacAddr) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        a ^ 2,
        b,
        c,
        0xff,
        0xfe,
        d,
        e,
        f,
    ])
}

/// Host end name: `ivh<master ifindex>.<dev_id>`, unique in the master's namespace.
fn host_end_name(master_index: u32, dev_id: u16) -> String {
    let n = format!("ivh{master_index}.{dev_id}");
    if n.len() <= 15 {
        n
    } else {
        format!("iv{master_index:x}.{dev_id:x}")
    }
}

impl Daemon {
    pub fn new(socket: &Path) -> anyhow::Result<Self> {
        let control = Control::bind(socket)?;
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&control.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        Ok(Self {
            poll,
            control,
            watched: HashMap::new(),
            ports: PortMap::default(),
            next_token: 1,
            metrics: None,
            backend: Backend::Kernel,
            fast_path: true,
            busy_poll: Duration::ZERO,
            owner: Mark::owner_of(socket),
            checked_tables: std::time::Instant::now(),
            home: NetNs::current()?.key(),
            named: None,
            checked_holders: std::time::Instant::now(),
        })
    }

    /// Kernel-backend ports get the BPF fast path (`true` unless told otherwise).
    pub fn with_fast_path(mut self, on: bool) -> Self {
        self.fast_path = on;
        self
    }

    /// New ports use `backend` (the kernel backend unless told otherwise).
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Switching threads poll for `t` after a frame before they sleep (0: never).
    pub fn with_busy_poll(mut self, t: Duration) -> Self {
        self.busy_poll = t;
        self
    }
}

/// Closes `sock` on a thread of its own once nothing else holds it (the switching
/// thread may still, until it takes the port's next plan).
fn close_later(sock: Arc<PacketSocket>) {
    static CLOSER: std::sync::OnceLock<std::sync::mpsc::Sender<Arc<PacketSocket>>> =
        std::sync::OnceLock::new();
    let tx = CLOSER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Arc<PacketSocket>>();
        let spawned = std::thread::Builder::new()
            .name("closer".into())
            .spawn(move || {
                for mut s in rx {
                    // Bounded: a reference kept for good is dropped by its holder.
                    for _ in 0..500 {
                        match Arc::try_unwrap(s) {
                            Ok(sock) => {
                                drop(sock);
                                break;
                            }
                            Err(again) => {
                                s = again;
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no closer thread ({e}): sockets are closed on the way");
        }
        tx
    });
    // With no closer thread, the socket comes back and is closed here.
    let _ = tx.send(sock);
}

/// A request socket borrowed from a watched namespace or made for one request.
enum RtnlRef<'a> {
    Watched(&'a mut Rtnl),
    Own(Rtnl),
}

impl RtnlRef<'_> {
    fn get(&mut self) -> &mut Rtnl {
        match self {
            Self::Watched(r) => r,
            Self::Own(r) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_as_the_kernel_derives_it() {
        let mac = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(
            slave_link_local(mac, 1),
            "fe80::5254:0:112:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            eui64_link_local(mac),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn host_end_names_fit() {
        assert_eq!(host_end_name(2, 1), "ivh2.1");
        assert!(host_end_name(u32::MAX, 0xfffd).len() <= 15);
    }
}

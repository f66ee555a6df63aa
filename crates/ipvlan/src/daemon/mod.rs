//! The daemon: one process serving every master in every namespace.
//!
//! It owns the ports (one per master, keyed by the master's namespace and ifindex),
//! learns slave addresses from rtnetlink events the kernel's way, hands every change
//! to the port's datapath (`ipvlan_datapath::kernel::Datapath`: its switching thread,
//! nft tables and fast path), and answers the CLI on a Unix socket. Everything runs on
//! one control thread; each port's frames are switched on that port's own thread (see
//! `ipvlan_datapath::user`).
//!
//! Where a slave is: the slave end of a veth pair can be moved to any namespace; its
//! host end stays beside the master. The host end's `IFLA_LINK` and
//! `IFLA_LINK_NETNSID` say where the slave end is now, and one monitor socket per
//! master namespace (listening to all namespaces that have an id there) sees its
//! address, link and multicast events wherever it goes. No descriptor of a slave's
//! namespace is kept, so deleting that namespace is not prevented.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ipvlan_core::{Flags, MacAddr, Mode, Port, PortError, SlaveId, ip_multicast_mac};
use ipvlan_datapath::kernel::{self, At, Datapath, HostEnd, L3sQueue, PortInput, ProgramDrops};
use ipvlan_datapath::{Backend, EGRESS_MARK, SlaveCounters, guard};
use ipvlan_sys::netns::{all_namespaces, named_namespaces};
use ipvlan_sys::nfqueue::NfQueue;
use ipvlan_sys::packet::PacketSocket;
use ipvlan_sys::raw::RawSender;
use ipvlan_sys::rtnl::{
    Addr, Event, IFF_ALLMULTI, IFF_LOWER_UP, IFF_NOARP, IFF_PROMISC, IFF_UP, Link, LinkChange,
    Monitor, Rtnl, RtnlError, VethSpec,
};
use ipvlan_sys::{NetNs, NsKey, nft};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use ipvlan::proto::{self, Notice, PortArgs, Reply, Request, SlaveView, Status};

mod adopt;
mod events;
mod hostend;
mod l3s;
mod metrics;

pub use adopt::Mark;
pub use metrics::MetricsListener;

const LISTENER: Token = Token(0);
const METRICS: Token = Token(usize::MAX);
/// First NFQUEUE number used for L3S ports.
const L3S_QUEUE_BASE: u16 = 17_000;
/// The interface alias that marks a host end as ours.
pub const ALIAS_PREFIX: &str = "ipvlan-rs:";

/// A failed request: what to print and the exit status.
#[derive(Debug)]
pub struct Fail {
    pub status: Status,
    pub msg: String,
}

fn refused(msg: impl Into<String>) -> Fail {
    Fail {
        status: Status::Refused,
        msg: msg.into(),
    }
}

fn usage(msg: impl Into<String>) -> Fail {
    Fail {
        status: Status::Usage,
        msg: msg.into(),
    }
}

impl From<RtnlError> for Fail {
    fn from(e: RtnlError) -> Self {
        refused(e.to_string())
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        refused(format!("Error: {e}"))
    }
}

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
}

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
}

impl Settings {
    fn of(port: &Port) -> Self {
        Self {
            mode: port.mode(),
            flags: port.flags(),
            source_guard: port.source_guard(),
        }
    }

    fn restore(self, port: &mut Port) {
        port.apply_changelink(Some(self.mode), Some(self.flags));
        port.set_source_guard(self.source_guard);
    }
}

struct PortRec {
    ns: NsKey,
    master_index: u32,
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
    listener: UnixListener,
    watched: HashMap<NsKey, Watched>,
    ports: Vec<PortRec>,
    next_token: usize,
    /// `ipvlan monitor` connections, written without blocking.
    subscribers: Vec<UnixStream>,
    metrics: Option<MetricsListener>,
    /// The backend new ports get.
    backend: Backend,
    /// Kernel-backend ports get the BPF fast path (see `fast`).
    fast_path: bool,
    /// How long a user-backend switching thread polls after a frame before it sleeps.
    busy_poll: std::time::Duration,
    /// This daemon's identity in the marks it leaves on host ends.
    owner: String,
    /// When the ports' nft tables were last checked (see `check_tables`).
    checked_tables: std::time::Instant,
}

/// The IPv6 link-local address the kernel gives an ipvlan slave (spec §1.5): the
/// dev_id in place of `ff:fe`, the U/L bit left alone.
pub fn slave_link_local(mac: MacAddr, dev_id: u16) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac;
    let [h, l] = dev_id.to_be_bytes();
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, a, b, c, h, l, d, e, f])
}

/// The classic EUI-64 link-local a veth with this MAC generates by itself.
fn eui64_link_local(mac: MacAddr) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac;
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

fn mac_str(m: MacAddr) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
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

/// Checks that another user can neither replace the control socket nor plant one:
/// its directory is created `0700` if missing; an existing one must be a real
/// directory (not a symbolic link), owned by the daemon's user or root, and writable
/// by nobody else unless it is sticky (like `/tmp`). Whatever is at the path itself
/// must be a socket (left by an earlier daemon): a file or a link there is refused, not
/// removed.
fn safe_socket_path(socket: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let md = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect {}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    let mode = md.mode() & 0o7777;
    if md.file_type().is_symlink() {
        anyhow::bail!(
            "the control socket's directory {} is a symbolic link; give a real directory with --socket",
            dir.display()
        );
    }
    if !md.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    if md.uid() != me && md.uid() != 0 {
        anyhow::bail!(
            "the control socket's directory {} belongs to uid {}, not to the daemon's user (uid {me}) or root; another user could replace the socket",
            dir.display(),
            md.uid()
        );
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        anyhow::bail!(
            "the control socket's directory {} is writable by other users (mode {mode:04o}); make it 0755 or 0700, or use a sticky directory",
            dir.display()
        );
    }
    match std::fs::symlink_metadata(socket) {
        Ok(m) if !m.file_type().is_socket() => anyhow::bail!(
            "{} exists and is not a socket; refusing to replace it (remove it, or choose another --socket)",
            socket.display()
        ),
        Ok(m) if m.uid() != me && m.uid() != 0 => anyhow::bail!(
            "the socket {} belongs to uid {}, not to the daemon's user",
            socket.display(),
            m.uid()
        ),
        _ => Ok(()),
    }
}

impl Daemon {
    pub fn new(socket: &Path) -> anyhow::Result<Self> {
        safe_socket_path(socket)?;
        if UnixStream::connect(socket).is_ok() {
            anyhow::bail!("a daemon already answers on {}", socket.display());
        }
        if socket.exists() {
            // A socket left by a daemon that died (checked: a socket, nobody answers).
            std::fs::remove_file(socket)
                .with_context(|| format!("cannot remove the stale {}", socket.display()))?;
        }
        // Created 0600 (no moment where others may connect), and set so again below.
        let old_mask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(socket);
        nix::sys::stat::umask(old_mask);
        let listener = bound.with_context(|| format!("cannot listen on {}", socket.display()))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        Ok(Self {
            poll,
            listener,
            watched: HashMap::new(),
            ports: Vec::new(),
            next_token: 1,
            subscribers: Vec::new(),
            metrics: None,
            backend: Backend::Kernel,
            fast_path: true,
            busy_poll: std::time::Duration::ZERO,
            owner: Mark::owner_of(socket),
            checked_tables: std::time::Instant::now(),
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
    pub fn with_busy_poll(mut self, t: std::time::Duration) -> Self {
        self.busy_poll = t;
        self
    }

    /// Serves until `stop` becomes true.
    pub fn run(&mut self, stop: &std::sync::atomic::AtomicBool) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(64);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let timeout = if self.ports.iter().any(|p| p.datapath.waiting()) {
                kernel::NFT_QUIET
            } else {
                Duration::from_millis(500)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            let tokens: Vec<Token> = events.iter().map(|e| e.token()).collect();
            for t in tokens {
                if t == LISTENER {
                    self.accept_all();
                } else if t == METRICS {
                    self.serve_metrics();
                } else if let Some(key) = self
                    .watched
                    .iter()
                    .find(|(_, w)| w.token == t)
                    .map(|(k, _)| *k)
                {
                    self.drain_monitor(key);
                }
            }
            self.tick(false);
            if self.checked_tables.elapsed() >= kernel::TABLE_CHECK {
                self.checked_tables = std::time::Instant::now();
                self.check_tables();
            }
        }
        self.tick(true);
        Ok(())
    }

    /// Lets every port's datapath apply its held-back changes (all of them, `force`).
    fn tick(&mut self, force: bool) {
        let now = std::time::Instant::now();
        for p in &mut self.ports {
            if let Some(w) = self.watched.get_mut(&p.ns) {
                p.datapath.tick(&mut w.at(), now, force);
            }
        }
    }

    /// Puts back the ports' nft tables that were removed or changed from outside.
    fn check_tables(&mut self) {
        for (key, w) in &mut self.watched {
            let mut ports: Vec<&mut Datapath> = self
                .ports
                .iter_mut()
                .filter(|p| p.ns == *key)
                .map(|p| &mut p.datapath)
                .collect();
            kernel::restore_tables(&mut w.at(), &mut ports);
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = self.serve(&stream) {
                        tracing::warn!("control connection: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn serve(&mut self, stream: &UnixStream) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let (pid, uid) = ipvlan_sys::unix::peer_cred(stream)?;
        // Read the request first, so the refusal below reaches a client still writing.
        let (req, fd) = proto::receive(stream)?;
        // Root or CAP_NET_ADMIN in the daemon's own user namespace: a root inside an
        // unprivileged user namespace may not change ports (spec §1.4, C22).
        if !ipvlan_sys::unix::same_user_ns(pid)
            || (uid != 0 && !ipvlan_sys::unix::has_net_admin(pid))
        {
            return proto::send_reply(
                stream,
                &Reply {
                    status: Status::Refused,
                    error: Some(
                        "Error: Operation not permitted (ipvlan-rs needs root or CAP_NET_ADMIN)."
                            .into(),
                    ),
                    links: vec![],
                },
            );
        }
        if let Request::Monitor = req {
            proto::send_reply(
                stream,
                &Reply {
                    status: Status::Ok,
                    error: None,
                    links: vec![],
                },
            )?;
            stream.set_nonblocking(true)?;
            self.subscribers.push(stream.try_clone()?);
            return Ok(());
        }
        let reply = match self.handle(req, fd) {
            Ok(links) => Reply {
                status: Status::Ok,
                error: None,
                links,
            },
            Err(f) => Reply {
                status: f.status,
                error: Some(f.msg),
                links: vec![],
            },
        };
        proto::send_reply(stream, &reply)
    }

    fn handle(&mut self, req: Request, fd: OwnedFd) -> Result<Vec<SlaveView>, Fail> {
        let caller = NetNs::from_fd(fd)?;
        match req {
            Request::Add {
                master,
                name,
                mtu,
                args,
            } => self
                .add(&caller, &master, &name, mtu, args)
                .map(|()| vec![]),
            Request::Set { dev, args } => self.set(&caller, &dev, args).map(|()| vec![]),
            Request::Del { dev } => self.del(&caller, &dev).map(|()| vec![]),
            Request::Show { dev } => self.show(&caller, dev.as_deref()),
            Request::Monitor => Ok(vec![]),
        }
    }

    /// A request socket in `ns`: the watched one, or a fresh one.
    fn rtnl_for(&mut self, ns: &NetNs) -> io::Result<RtnlRef<'_>> {
        if self.watched.contains_key(&ns.key()) {
            Ok(RtnlRef::Watched(
                &mut self.watched.get_mut(&ns.key()).expect("checked").rtnl,
            ))
        } else {
            Ok(RtnlRef::Own(Rtnl::in_ns(ns)?))
        }
    }

    fn add(
        &mut self,
        caller: &NetNs,
        master: &str,
        name: &str,
        mtu: Option<u32>,
        conf: PortArgs,
    ) -> Result<(), Fail> {
        crate::grammar::check_ifname(name).map_err(|e| usage(e.0))?;
        let (m, taken) = {
            let mut rt = self.rtnl_for(caller)?;
            let m = rt.get().link_by_name(master)?;
            let taken = rt.get().link_by_name(name)?.is_some();
            (m, taken)
        };
        let m = m.ok_or_else(|| usage(format!("Cannot find device \"{master}\"")))?;
        if taken {
            return Err(refused(format!(
                "Error: a device named \"{name}\" already exists (RTNETLINK answers: File exists)."
            )));
        }
        // A slave as master: the new slave joins that slave's port (spec §1.3 step 2).
        if let Some((pi, _)) = self.find_slave(caller, m.index)? {
            return self.add_to_port(pi, caller, name, mtu, conf);
        }
        if m.alias
            .as_deref()
            .is_some_and(|a| a.starts_with(ALIAS_PREFIX))
        {
            return Err(refused(format!(
                "Error: \"{master}\" is the host end of an ipvlan-rs slave and cannot be a master."
            )));
        }
        if m.is_loopback() {
            return Err(refused(format!(
                "Error: master \"{master}\" is a loopback device; an ipvlan master must be an Ethernet device (RTNETLINK answers: Invalid argument)."
            )));
        }
        if !m.is_ether() || m.mac.is_none() {
            return Err(refused(format!(
                "Error: master \"{master}\" is not an Ethernet device (link type {}); an ipvlan master must be an Ethernet device (RTNETLINK answers: Invalid argument).",
                m.arphrd
            )));
        }
        if m.controller.is_some() {
            return Err(refused(format!(
                "Error: master \"{master}\" is already in use as a port of another device (RTNETLINK answers: Device or resource busy)."
            )));
        }
        let pi = match self
            .ports
            .iter()
            .position(|p| p.ns == caller.key() && p.master_index == m.index)
        {
            Some(pi) => pi,
            None => self.new_port(caller, &m)?,
        };
        let result = self.add_to_port(pi, caller, name, mtu, conf);
        if result.is_err()
            && let Some(pi) = self
                .ports
                .iter()
                .position(|p| p.ns == caller.key() && p.master_index == m.index)
            && self.ports[pi].slaves.is_empty()
        {
            self.destroy_port(pi);
        }
        result
    }

    /// Creates slave `name` in the caller's namespace, its host end beside the master.
    fn add_to_port(
        &mut self,
        pi: usize,
        caller: &NetNs,
        name: &str,
        mtu: Option<u32>,
        conf: PortArgs,
    ) -> Result<(), Fail> {
        let id = self.ports[pi].port.add_slave().map_err(|e| {
            refused(format!(
                "Error: {e} (RTNETLINK answers: No space left on device)"
            ))
        })?;
        let p = &self.ports[pi];
        let (pns, master_name, master_index) = (p.ns, p.master_name.clone(), p.master_index);
        let spec_mac = p.port.master_mac();
        let spec_mtu = mtu.unwrap_or(p.master_mtu);
        let host_name = host_end_name(master_index, id.0);
        let here = caller.key() == pns;
        let port_kind = p.datapath.kind();
        let slaves_before = p.slaves.len();
        let mark = Mark {
            owner: self.owner.clone(),
            slave: name.to_string(),
            master_index,
            dev_id: id,
            mode: p.port.mode(),
            flags: p.port.flags(),
            source_guard: p.port.source_guard(),
        };
        let w = self
            .watched
            .get_mut(&pns)
            .expect("port namespace is watched");
        // Elsewhere (a nested slave): created in the caller's namespace, peer sent home.
        let mut own = if here {
            None
        } else {
            Some(Rtnl::in_ns(caller)?)
        };
        let nsid = if here { None } else { w.rtnl.nsid_of(caller)? };
        let spec = VethSpec {
            name,
            mac: spec_mac,
            mtu: spec_mtu,
            peer_name: &host_name,
            peer_mtu: hostend::HOST_END_MTU,
            peer_netns_fd: (!here).then(|| w.ns.as_raw_fd()),
        };
        let created = match own.as_mut() {
            Some(rt) => rt.create_veth(&spec),
            None => w.rtnl.create_veth(&spec),
        };
        if let Err(e) = created {
            self.ports[pi].port.remove_slave(id);
            return Err(e.into());
        }
        let made = (|| -> Result<(Link, Link, PacketSocket), Fail> {
            let host = w
                .rtnl
                .link_by_name(&host_name)?
                .ok_or_else(|| refused("Error: the new host end vanished"))?;
            let slave_rt = own.as_mut().unwrap_or(&mut w.rtnl);
            let slave = slave_rt
                .link_by_name(name)?
                .ok_or_else(|| refused("Error: the new slave vanished"))?;
            // The kernel would derive the link-local from the dev_id; the daemon adds
            // that address itself when the slave comes up (see `ensure_link_local`).
            slave_rt.set_link(
                slave.index,
                &LinkChange {
                    ipv6_autoconf: Some(false),
                    ..Default::default()
                },
            )?;
            w.rtnl.set_link(
                host.index,
                &LinkChange {
                    flags_set: IFF_NOARP,
                    alias: Some(mark.alias(&master_name)),
                    ipv6_autoconf: Some(false),
                    ..Default::default()
                },
            )?;
            w.rtnl.set_link(
                host.index,
                &LinkChange {
                    flags_set: IFF_UP,
                    ..Default::default()
                },
            )?;
            let sock = w.ns.run(|| {
                PacketSocket::open_ring(host.index, port_kind.ring_slots(false, slaves_before))
            })??;
            sock.set_filter(port_kind.filters(mark.mode).1)?;
            Ok((host, slave, sock))
        })();
        let (host, slave, sock) = match made {
            Ok(v) => v,
            Err(e) => {
                if let Ok(Some(h)) = w.rtnl.link_by_name(&host_name) {
                    let _ = w.rtnl.del_link(h.index);
                }
                self.ports[pi].port.remove_slave(id);
                return Err(e);
            }
        };
        let p = &mut self.ports[pi];
        p.slaves.insert(
            id,
            SlaveRec {
                host_index: host.index,
                host_name,
                sock: Arc::new(sock),
                counters: Arc::new(SlaveCounters::default()),
                loc: Some(Loc {
                    nsid,
                    index: slave.index,
                }),
                name: name.to_string(),
                flags: slave.flags,
            },
        );
        let old = Settings::of(&p.port);
        let mode_changed = p.port.apply_newlink(conf.mode, conf.flags);
        if let Some(on) = conf.source_guard {
            p.port.set_source_guard(on);
        }
        if let Err(e) = self.sync_l3s(pi) {
            // As the kernel does when the L3S hooks cannot be registered: the new
            // slave is torn down and the port keeps its mode.
            old.restore(&mut self.ports[pi].port);
            self.remove_slave(pi, id, true);
            return Err(e);
        }
        if mode_changed {
            self.apply_noarp(pi);
        } else {
            self.set_noarp(pi, id);
        }
        self.publish(pi);
        self.notify(Notice::SlaveAdded {
            slave: name.to_string(),
            master: master_name,
            dev_id: id.0,
        });
        self.notify_mode(pi, old);
        Ok(())
    }

    fn new_port(&mut self, ns: &NetNs, m: &Link) -> Result<usize, Fail> {
        self.watch(ns)?;
        let w = &self.watched[&ns.key()];
        let kind = self.backend;
        let master_sock =
            Arc::new(w.ns.run(|| PacketSocket::open_ring(m.index, kind.ring_slots(true, 0)))??);
        let raw = w.ns.run(|| RawSender::open(m.index, EGRESS_MARK))??;
        let port = Port::new(m.mac.expect("checked by the caller"));
        let master = kernel::Master {
            index: m.index,
            name: m.name.clone(),
            sock: master_sock,
            raw: Some(raw),
        };
        let datapath = Datapath::start(
            kind,
            self.fast_path,
            master,
            port.snapshot(),
            self.busy_poll,
        )?;
        self.ports.push(PortRec {
            ns: ns.key(),
            master_index: m.index,
            master_name: m.name.clone(),
            port,
            slaves: BTreeMap::new(),
            datapath,
            marked: None,
            master_running: m.flags & (IFF_UP | IFF_LOWER_UP) == IFF_UP | IFF_LOWER_UP,
            l3s: None,
            master_mtu: m.mtu,
        });
        Ok(self.ports.len() - 1)
    }

    fn watch(&mut self, ns: &NetNs) -> io::Result<()> {
        if self.watched.contains_key(&ns.key()) {
            return Ok(());
        }
        let monitor = Monitor::in_ns(ns)?;
        let rtnl = Rtnl::in_ns(ns)?;
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll.registry().register(
            &mut SourceFd(&monitor.as_raw_fd()),
            token,
            Interest::READABLE,
        )?;
        self.watched.insert(
            ns.key(),
            Watched {
                ns: ns.try_clone()?,
                rtnl,
                monitor,
                token,
                nsid_paths: HashMap::new(),
                nft_gen: kernel::Gen::open(ns),
            },
        );
        Ok(())
    }

    fn destroy_port(&mut self, pi: usize) {
        self.leave_l3s(pi);
        let p = self.ports.remove(pi);
        if let Some(w) = self.watched.get_mut(&p.ns) {
            p.datapath.remove(&mut w.at());
        }
        if !self.ports.iter().any(|q| q.ns == p.ns) {
            self.unwatch(p.ns);
        }
    }

    fn unwatch(&mut self, key: NsKey) {
        if let Some(w) = self.watched.remove(&key) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&w.monitor.as_raw_fd()));
        }
    }

    /// Forgets a slave; with `delete`, removes its veth pair too.
    fn remove_slave(&mut self, pi: usize, id: SlaveId, delete: bool) {
        let p = &mut self.ports[pi];
        let Some(rec) = p.slaves.remove(&id) else {
            return;
        };
        p.port.remove_slave(id);
        if delete && let Some(w) = self.watched.get_mut(&p.ns) {
            match w.rtnl.del_link(rec.host_index) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(nix::errno::Errno::ENODEV as i32) => {}
                Err(e) => tracing::warn!("deleting {}: {e}", rec.host_name),
            }
        }
        let master = p.master_name.clone();
        self.notify(Notice::SlaveRemoved {
            slave: rec.name,
            master,
            dev_id: id.0,
        });
        if self.ports[pi].slaves.is_empty() {
            self.destroy_port(pi);
        } else {
            self.publish(pi);
        }
        // Closing a bound packet socket waits for an RCU grace period (about 10 ms):
        // not on the way to the answer.
        close_later(rec.sock);
    }

    /// The port and slave that `index` in namespace `ns` is, if it is one of ours.
    fn find_slave(&mut self, ns: &NetNs, index: u32) -> Result<Option<(usize, SlaveId)>, Fail> {
        for pi in 0..self.ports.len() {
            let pns = self.ports[pi].ns;
            let nsid = if pns == ns.key() {
                None
            } else {
                let w = self
                    .watched
                    .get_mut(&pns)
                    .expect("port namespace is watched");
                match w.rtnl.nsid_of(ns)? {
                    Some(id) => Some(id),
                    None => continue,
                }
            };
            let want = Some(Loc { nsid, index });
            if let Some((&id, _)) = self.ports[pi].slaves.iter().find(|(_, s)| s.loc == want) {
                return Ok(Some((pi, id)));
            }
        }
        Ok(None)
    }

    fn resolve_dev(&mut self, caller: &NetNs, dev: &str) -> Result<(usize, SlaveId), Fail> {
        let link = self
            .rtnl_for(caller)?
            .get()
            .link_by_name(dev)?
            .ok_or_else(|| usage(format!("Cannot find device \"{dev}\"")))?;
        self.find_slave(caller, link.index)?.ok_or_else(|| {
            refused(format!(
                "Error: \"{dev}\" is not an ipvlan device of ipvlan-rs (use ip for other devices)."
            ))
        })
    }

    fn del(&mut self, caller: &NetNs, dev: &str) -> Result<(), Fail> {
        let (pi, id) = self.resolve_dev(caller, dev)?;
        self.remove_slave(pi, id, true);
        Ok(())
    }

    fn set(&mut self, caller: &NetNs, dev: &str, conf: PortArgs) -> Result<(), Fail> {
        let (pi, _) = self.resolve_dev(caller, dev)?;
        let port = &mut self.ports[pi].port;
        let old = Settings::of(port);
        let changed = port.apply_changelink(conf.mode, conf.flags);
        if let Some(on) = conf.source_guard {
            port.set_source_guard(on);
        }
        if let Err(e) = self.sync_l3s(pi) {
            old.restore(&mut self.ports[pi].port);
            return Err(e);
        }
        if changed {
            self.apply_noarp(pi);
        }
        self.publish(pi);
        self.notify_mode(pi, old);
        Ok(())
    }

    fn notify_mode(&mut self, pi: usize, old: Settings) {
        let p = &self.ports[pi];
        let now = Settings::of(&p.port);
        if now != old {
            let master = p.master_name.clone();
            self.notify(Notice::ModeChanged {
                master,
                mode: now.mode,
                flags: now.flags,
                source_guard: now.source_guard,
            });
        }
    }

    fn show(&mut self, caller: &NetNs, dev: Option<&str>) -> Result<Vec<SlaveView>, Fail> {
        let only = match dev {
            Some(d) => Some(self.resolve_dev(caller, d)?),
            None => None,
        };
        // A slave's view lists what its port switches (the CNI plugin waits for its
        // addresses there): the port's held-back changes are applied first.
        if let Some((pi, _)) = only {
            let p = &mut self.ports[pi];
            if let Some(w) = self.watched.get_mut(&p.ns) {
                p.datapath
                    .tick(&mut w.at(), std::time::Instant::now(), true);
            }
        }
        Ok(self.views(only))
    }

    /// Every slave, as `link show` reports it.
    fn show_all(&mut self) -> Vec<SlaveView> {
        self.views(None)
    }

    fn views(&mut self, only: Option<(usize, SlaveId)>) -> Vec<SlaveView> {
        let names = named_namespaces();
        let ns_name = |k: NsKey| names.iter().find(|(_, n)| *n == k).map(|(s, _)| s.clone());
        let mut out = Vec::new();
        for pi in 0..self.ports.len() {
            let ids: Vec<SlaveId> = self.ports[pi].slaves.keys().copied().collect();
            let (host_stats, private) = self.port_counters(pi);
            for id in ids {
                if only.is_some_and(|o| o != (pi, id)) {
                    continue;
                }
                let (key, link) = match self.slave_link(pi, id) {
                    Some((k, l)) => (Some(k), l),
                    None => (None, None),
                };
                let p = &self.ports[pi];
                let rec = &p.slaves[&id];
                let state = p.port.slave(id);
                let link = link.unwrap_or_else(|| Link {
                    name: rec.name.clone(),
                    flags: rec.flags,
                    ..Default::default()
                });
                out.push(SlaveView {
                    ifindex: link.index,
                    ifname: link.name.clone(),
                    flags: crate::output::flag_names(link.flags),
                    mtu: link.mtu,
                    operstate: link.operstate.to_string(),
                    address: link.mac.map(mac_str).unwrap_or_default(),
                    netns: key.and_then(ns_name),
                    netns_id: key.map(|k| k.to_string()),
                    master: p.master_name.clone(),
                    master_netns: ns_name(p.ns),
                    mode: p.port.mode(),
                    port_flags: p.port.flags(),
                    source_guard: p.port.source_guard(),
                    dev_id: id.0,
                    host_end: rec.host_name.clone(),
                    addrs: state
                        .map(|s| {
                            // Sorted, so that the listing does not depend on event order.
                            let mut a = s.addrs.clone();
                            a.sort();
                            a.iter().map(|a| a.to_string()).collect()
                        })
                        .unwrap_or_default(),
                    counters: {
                        let mut c = rec.counters.read();
                        // The slave end's own statistics, as `ip -s` shows them in its
                        // namespace: the fast path hands frames straight to it, past
                        // its host end. Else: what the host end received its slave
                        // sent, and the reverse.
                        if let Some(s) = &link.stats {
                            c.tx_packets = s.tx_packets;
                            c.tx_bytes = s.tx_bytes;
                            c.rx_packets = s.rx_packets;
                            c.rx_bytes = s.rx_bytes;
                        } else if let Some(h) = host_stats.get(&rec.host_index) {
                            c.tx_packets = h.rx_packets;
                            c.tx_bytes = h.rx_bytes;
                            c.rx_packets = h.tx_packets;
                            c.rx_bytes = h.tx_bytes;
                        }
                        for &(_, why, n) in private.iter().filter(|(s, _, n)| *s == id && *n > 0) {
                            c.add_drops(why, n);
                        }
                        c
                    },
                    backend: self.ports[pi].datapath.kind().as_str().to_string(),
                    fast_path: self.ports[pi].datapath.fast_path_active(),
                });
            }
        }
        out
    }

    /// A port's host-end statistics by ifindex, and (kernel backend) the frames the
    /// program dropped per slave and reason (`private`, `spoof`, `source_guard`).
    fn port_counters(
        &mut self,
        pi: usize,
    ) -> (HashMap<u32, ipvlan_sys::rtnl::LinkStats>, Vec<ProgramDrops>) {
        let p = &self.ports[pi];
        let Some(w) = self.watched.get_mut(&p.ns) else {
            return Default::default();
        };
        let stats = w
            .rtnl
            .links()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|l| l.stats.map(|s| (l.index, s)))
            .collect();
        (stats, p.datapath.program_drops(&w.ns))
    }

    // ---- where slaves are -----------------------------------------------------------

    /// Tells every `ipvlan monitor` (and the log) about a change. A subscriber that
    /// cannot take the whole line at once is dropped rather than waited for.
    fn notify(&mut self, n: Notice) {
        tracing::info!("{n}");
        let mut line = serde_json::to_vec(&n).unwrap_or_default();
        line.push(b'\n');
        self.subscribers.retain(|s| {
            use std::io::Write;
            matches!((&*s).write(&line), Ok(k) if k == line.len())
        });
    }

    /// Hands the port's new state to its datapath, after writing it on the host ends.
    fn publish(&mut self, pi: usize) {
        self.mark_host_ends(pi);
        let p = &mut self.ports[pi];
        let Some(w) = self.watched.get_mut(&p.ns) else {
            return;
        };
        let ends = p
            .slaves
            .iter()
            .map(|(&id, r)| HostEnd {
                id,
                index: r.host_index,
                name: r.host_name.clone(),
                sock: r.sock.clone(),
                counters: r.counters.clone(),
                away: r.loc.is_some_and(|l| l.nsid.is_some()),
            })
            .collect();
        let l3s = p.l3s.as_ref().map(|l| L3sQueue {
            num: l.num,
            queue: l.queue.clone(),
        });
        let input = PortInput {
            snap: p.port.snapshot(),
            ends,
            l3s,
        };
        p.datapath.apply(&mut w.at(), input);
    }

    /// The port's state lives on its devices, for the next daemon (see `adopt`).
    fn mark_host_ends(&mut self, pi: usize) {
        let p = &mut self.ports[pi];
        let settings = Settings::of(&p.port);
        if p.marked == Some(settings) {
            return;
        }
        let Some(w) = self.watched.get_mut(&p.ns) else {
            return;
        };
        let mut ok = true;
        for (&id, r) in &p.slaves {
            let alias = Mark {
                owner: self.owner.clone(),
                slave: r.name.clone(),
                master_index: p.master_index,
                dev_id: id,
                mode: settings.mode,
                flags: settings.flags,
                source_guard: settings.source_guard,
            }
            .alias(&p.master_name);
            let change = LinkChange {
                alias: Some(alias),
                ..Default::default()
            };
            ok &= w.rtnl.set_link(r.host_index, &change).is_ok();
        }
        if ok {
            p.marked = Some(settings);
        }
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
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
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

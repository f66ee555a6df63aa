//! The few rtnetlink requests the plugin needs that `ipvlan_sys::rtnl::Rtnl` does not
//! offer: moving a link to another namespace by descriptor, IPv4 addresses with their
//! broadcast, and routes (dump and add). Built on `netlink-packet-route` the same way.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use ipvlan_sys::NetNs;
use ipvlan_sys::rtnl::RtnlError;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sys::socket::{MsgFlags, recv};

pub type Result<T> = std::result::Result<T, RtnlError>;

const NLMSG_HDRLEN: usize = 16;

/// A route as far as the plugin cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: IpAddr,
    pub prefix: u8,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
}

pub struct Nl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Nl {
    /// A socket in the calling thread's namespace.
    pub fn new() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, 0))?;
        Ok(Self {
            sock,
            seq: 0,
            buf: vec![0; 1 << 16],
        })
    }

    /// A socket inside `ns`.
    pub fn in_ns(ns: &NetNs) -> io::Result<Self> {
        ns.run(Self::new)?
    }

    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST
            | flags
            | if flags & NLM_F_DUMP == NLM_F_DUMP {
                0
            } else {
                NLM_F_ACK
            };
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut out = vec![0; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock.send(&out, 0)?;
        let mut answers = Vec::new();
        loop {
            let n = recv(self.sock.as_raw_fd(), &mut self.buf, MsgFlags::empty())
                .map_err(io::Error::from)?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let len =
                    u32::from_ne_bytes(self.buf[off..off + 4].try_into().expect("4")) as usize;
                if len < NLMSG_HDRLEN || off + len > n {
                    break;
                }
                let raw = &self.buf[off..off + len];
                off += (len + 3) & !3;
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw)
                    .map_err(|e| RtnlError::Decode(e.to_string()))?;
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(c) => Err(RtnlError::Kernel { errno: -c.get() }),
                        };
                    }
                    NetlinkPayload::InnerMessage(i) => answers.push(i),
                    _ => {}
                }
            }
        }
    }

    /// Moves link `index` into the namespace `ns` (`IFLA_NET_NS_FD`).
    pub fn move_to_netns(&mut self, index: u32, ns: BorrowedFd<'_>) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        self.exchange(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }

    /// Adds an address (with its broadcast, for IPv4 prefixes shorter than /31).
    pub fn add_addr(&mut self, index: u32, ip: IpAddr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(ip);
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(ip));
        m.attributes.push(AddressAttribute::Address(ip));
        if let IpAddr::V4(v4) = ip
            && prefix < 31
        {
            let host_bits = u32::MAX >> prefix;
            let brd = std::net::Ipv4Addr::from(u32::from(v4) | host_bits);
            m.attributes.push(AddressAttribute::Broadcast(brd));
        }
        self.exchange(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The unicast routes of every table (IPv4 and IPv6).
    pub fn routes(&mut self) -> Result<Vec<RouteEntry>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = fam;
            for a in self.exchange(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)? {
                if let RouteNetlinkMessage::NewRoute(r) = a
                    && r.header.kind == RouteType::Unicast
                {
                    out.push(parse_route(r));
                }
            }
        }
        Ok(out)
    }

    /// Adds a route through link `oif`.
    pub fn add_route(
        &mut self,
        dst: IpAddr,
        prefix: u8,
        gw: Option<IpAddr>,
        oif: u32,
        priority: Option<u32>,
        table: Option<u32>,
    ) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(dst);
        m.header.destination_prefix_length = prefix;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.kind = RouteType::Unicast;
        let table = table.unwrap_or(u32::from(RouteHeader::RT_TABLE_MAIN));
        m.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.attributes.push(RouteAttribute::Table(table));
        if prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        }
        if let Some(gw) = gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        m.attributes.push(RouteAttribute::Oif(oif));
        if let Some(p) = priority {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        self.exchange(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_ip(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

fn parse_route(r: RouteMessage) -> RouteEntry {
    let unspecified = match r.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    let mut e = RouteEntry {
        dst: unspecified,
        prefix: r.header.destination_prefix_length,
        gw: None,
        oif: None,
        table: u32::from(r.header.table),
    };
    for a in r.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                if let Some(ip) = route_ip(d) {
                    e.dst = ip;
                }
            }
            RouteAttribute::Gateway(g) => e.gw = route_ip(g),
            RouteAttribute::Oif(o) => e.oif = Some(o),
            RouteAttribute::Table(t) => e.table = t,
            _ => {}
        }
    }
    e
}

/// Masks `ip` to its first `prefix` bits.
pub fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::network;

    #[test]
    fn masks() {
        assert_eq!(
            network("10.1.2.3".parse().unwrap(), 24),
            "10.1.2.0".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(
            network("10.1.2.3".parse().unwrap(), 0),
            "0.0.0.0".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(
            network("fd00:1::5".parse().unwrap(), 64),
            "fd00:1::".parse::<std::net::IpAddr>().unwrap()
        );
    }
}

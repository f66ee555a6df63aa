//! rtnetlink: link, address, route, rule, traffic-control and namespace-id requests,
//! and event monitors.
//!
//! A socket belongs to the namespace it was created in ([`Rtnl::in_ns`] creates one
//! inside another namespace). Requests are synchronous: one request, then its
//! answers until the acknowledgement or the end of the dump (the framing is
//! [`crate::netlink`]'s). Messages are built and parsed with `netlink-packet-route`;
//! the multicast-address messages it does not know (`RTM_NEWMULTICAST` and friends)
//! are [`RtnlMessage::Mcast`], encoded here.
//!
//! Here: the request socket [`Rtnl`] and its plumbing, [`RtnlError`], and [`RtnlMessage`]
//! with its codec. By subject:
//!
//! * `link`: links, veth pairs, link changes, the ingress `bpf` filter, namespace ids;
//! * `addr`: interface addresses and the multicast groups joined on interfaces;
//! * `route`: routes, policy rules, neighbour entries, ipvlan-rs's own entries;
//! * `monitor`: the event socket [`Monitor`] and its [`Event`]s.

mod addr;
mod link;
mod monitor;
mod route;

pub use addr::{Addr, IFA_F_DADFAILED, IFA_F_TENTATIVE, Mcast};
pub use link::{
    ARPHRD_ETHER, IFF_ALLMULTI, IFF_LOOPBACK, IFF_LOWER_UP, IFF_NOARP, IFF_PROMISC, IFF_UP, Link,
    LinkChange, LinkStats, VethSpec,
};
pub use monitor::{Event, Monitor};
pub use route::{OwnEntry, OwnKind, PROTO_IPVLAN, RT_TABLE_MAIN, Route};

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_DUMP, NetlinkDeserializable, NetlinkHeader, NetlinkSerializable,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::NetNs;
use crate::netlink::{self, Family, Socket};

const RTM_NEWMULTICAST: u16 = 56;
const RTM_DELMULTICAST: u16 = 57;
const RTM_GETMULTICAST: u16 = 58;
const IFA_MULTICAST: u16 = 7;
const RTM_NEWNETCONF: u16 = 80;
const RTM_DELNETCONF: u16 = 81;

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("netlink: {0}")]
    Io(#[from] io::Error),
    #[error("RTNETLINK answers: {}", nix::errno::Errno::from_raw(*errno).desc())]
    Kernel { errno: i32 },
    #[error("cannot decode a netlink message: {0}")]
    Decode(String),
}

impl From<netlink::Error> for RtnlError {
    fn from(e: netlink::Error) -> Self {
        match e {
            netlink::Error::Io(e) => Self::Io(e),
            netlink::Error::Kernel { errno } => Self::Kernel { errno },
            netlink::Error::Decode(m) => Self::Decode(m),
        }
    }
}

impl RtnlError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno } => Some(*errno),
            Self::Io(e) => e.raw_os_error(),
            Self::Decode(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, RtnlError>;

/// `NETLINK_ROUTE`: links, addresses, routes, rules, traffic control.
#[derive(Debug)]
pub struct Rtnetlink;

impl Family for Rtnetlink {
    const PROTOCOL: isize = netlink_sys::protocols::NETLINK_ROUTE;
    type Message = RtnlMessage;
}

/// A message of `NETLINK_ROUTE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtnlMessage {
    /// Everything `netlink-packet-route` knows.
    Route(RouteNetlinkMessage),
    /// `RTM_{NEW,DEL,GET}MULTICAST`: an `ifaddrmsg` (family, interface) and the group.
    Mcast {
        message_type: u16,
        family: u8,
        index: u32,
        group: Option<IpAddr>,
    },
    /// `RTM_{NEW,DEL}NETCONF`: a `netconfmsg` (family), the device and its forwarding.
    Netconf { message_type: u16, conf: Netconf },
}

/// Length of `struct netconfmsg` (one byte), aligned.
const NETCONFMSG_LEN: usize = 4;
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
/// The `ifindex` of a netconf message about `conf/all` (the whole namespace).
pub const NETCONF_ALL: i32 = -1;

/// A setting of a namespace changed (`ip monitor netconf`): of one device, or of
/// `all` ([`NETCONF_ALL`]) or `default` (-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Netconf {
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// The device's ifindex, or [`NETCONF_ALL`], or -2 for `default`.
    pub ifindex: i32,
    /// Its `forwarding` now, where the message says (not for IPv6 `force_forwarding`).
    pub forwarding: Option<bool>,
}

fn parse_netconf(body: &[u8]) -> Option<Netconf> {
    let mut conf = Netconf {
        family: *body.first()?,
        ifindex: 0,
        forwarding: None,
    };
    for (ty, val) in netlink::attrs(body.get(NETCONFMSG_LEN..)?) {
        let v = i32::from_ne_bytes(val.get(..4)?.try_into().ok()?);
        match ty {
            NETCONFA_IFINDEX => conf.ifindex = v,
            NETCONFA_FORWARDING => conf.forwarding = Some(v != 0),
            _ => {}
        }
    }
    Some(conf)
}

/// One `i32` attribute, as the kernel writes it.
fn put_i32_attr(buffer: &mut [u8], ty: u16, v: i32) {
    buffer[..2].copy_from_slice(&8u16.to_ne_bytes());
    buffer[2..4].copy_from_slice(&ty.to_ne_bytes());
    buffer[4..8].copy_from_slice(&v.to_ne_bytes());
}

/// Length of `struct ifaddrmsg`.
const IFADDRMSG_LEN: usize = 8;

impl NetlinkSerializable for RtnlMessage {
    fn message_type(&self) -> u16 {
        match self {
            Self::Route(m) => m.message_type(),
            Self::Mcast { message_type, .. } | Self::Netconf { message_type, .. } => *message_type,
        }
    }

    fn buffer_len(&self) -> usize {
        match self {
            Self::Route(m) => m.buffer_len(),
            Self::Mcast { group, .. } => {
                IFADDRMSG_LEN + group.map_or(0, |g| 4 + if g.is_ipv4() { 4 } else { 16 })
            }
            Self::Netconf { conf, .. } => {
                NETCONFMSG_LEN + 8 + if conf.forwarding.is_some() { 8 } else { 0 }
            }
        }
    }

    fn serialize(&self, buffer: &mut [u8]) {
        match self {
            Self::Route(m) => m.serialize(buffer),
            Self::Mcast {
                family,
                index,
                group,
                ..
            } => {
                buffer[..IFADDRMSG_LEN].fill(0);
                buffer[0] = *family;
                buffer[4..8].copy_from_slice(&index.to_ne_bytes());
                if let Some(g) = group {
                    let octets = match g {
                        IpAddr::V4(v4) => v4.octets().to_vec(),
                        IpAddr::V6(v6) => v6.octets().to_vec(),
                    };
                    let len = 4 + u16::try_from(octets.len()).expect("4 or 16 octets");
                    buffer[8..10].copy_from_slice(&len.to_ne_bytes());
                    buffer[10..12].copy_from_slice(&IFA_MULTICAST.to_ne_bytes());
                    buffer[12..].copy_from_slice(&octets);
                }
            }
            Self::Netconf { conf, .. } => {
                buffer[..NETCONFMSG_LEN].fill(0);
                buffer[0] = conf.family;
                let at = NETCONFMSG_LEN;
                put_i32_attr(&mut buffer[at..], NETCONFA_IFINDEX, conf.ifindex);
                if let Some(f) = conf.forwarding {
                    put_i32_attr(&mut buffer[at + 8..], NETCONFA_FORWARDING, i32::from(f));
                }
            }
        }
    }
}

impl NetlinkDeserializable for RtnlMessage {
    type Error = DecodeError;

    fn deserialize(
        header: &NetlinkHeader,
        payload: &[u8],
    ) -> std::result::Result<Self, DecodeError> {
        match header.message_type {
            RTM_NEWMULTICAST | RTM_DELMULTICAST | RTM_GETMULTICAST => {
                let (family, index, group) = parse_mcast(payload)
                    .ok_or_else(|| DecodeError::from("a malformed multicast-address message"))?;
                Ok(Self::Mcast {
                    message_type: header.message_type,
                    family,
                    index,
                    group,
                })
            }
            RTM_NEWNETCONF | RTM_DELNETCONF => Ok(Self::Netconf {
                message_type: header.message_type,
                conf: parse_netconf(payload)
                    .ok_or_else(|| DecodeError::from("a malformed netconf message"))?,
            }),
            _ => RouteNetlinkMessage::deserialize(header, payload).map(Self::Route),
        }
    }
}

/// A request socket.
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket<Rtnetlink>,
}

/// Parses the body of an `RTM_*MULTICAST` message: (family, interface, group). The
/// group is `None` when the message carries no `IFA_MULTICAST` (a request) or one that
/// is no address of the family.
fn parse_mcast(body: &[u8]) -> Option<(u8, u32, Option<IpAddr>)> {
    let family = *body.first()?;
    let index = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
    for (ty, val) in netlink::attrs(body.get(IFADDRMSG_LEN..)?) {
        if ty == IFA_MULTICAST {
            let group = match (i32::from(family), val.len()) {
                (libc::AF_INET, 4) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(val).ok()?)),
                (libc::AF_INET6, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(val).ok()?)),
                _ => return Some((family, index, None)),
            };
            return Some((family, index, Some(group)));
        }
    }
    Some((family, index, None))
}

fn ip_family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

impl Rtnl {
    /// A request socket in the calling thread's namespace.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            sock: Socket::open()?,
        })
    }

    /// A request socket inside `ns`.
    pub fn in_ns(ns: &NetNs) -> io::Result<Self> {
        ns.run(Self::new)?
    }

    /// Sends a request and collects its answers until the ACK or the end of the dump.
    /// A request that is not a dump asks for an ACK, so its end is always marked.
    fn exchange(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RtnlMessage>> {
        let flags = if flags & NLM_F_DUMP == NLM_F_DUMP {
            flags
        } else {
            flags | NLM_F_ACK
        };
        Ok(self.sock.request(RtnlMessage::Route(msg), flags)?)
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.exchange(msg, flags).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::link::{link_msg, parse_link};
    use super::monitor::to_event;
    use super::route::parse_route;
    use crate::netlink::{NLMSG_HDRLEN, encode, frames};
    use crate::sock::abi_u8;
    use netlink_packet_core::{NLM_F_MULTIPART, NLM_F_REQUEST};
    use netlink_packet_route::link::LinkAttribute;
    use netlink_packet_route::route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
    };

    fn decode_one(bytes: &[u8]) -> RtnlMessage {
        let f: Vec<_> = frames(bytes)
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(f.len(), 1);
        f[0].decode().unwrap()
    }

    #[test]
    fn parses_a_netconf_message_as_the_kernel_writes_it() {
        // `inet all forwarding off`, then the same for one device with the attribute
        // left out (IPv6 `force_forwarding` changes come so).
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m.extend_from_slice(&[abi_u8(libc::AF_INET), 0, 0, 0]);
        for (ty, v) in [
            (NETCONFA_IFINDEX, NETCONF_ALL),
            (NETCONFA_FORWARDING, 0),
            (3, 1),
        ] {
            m.extend_from_slice(&8u16.to_ne_bytes());
            m.extend_from_slice(&ty.to_ne_bytes());
            m.extend_from_slice(&v.to_ne_bytes());
        }
        let len = u32::try_from(m.len()).unwrap();
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&RTM_NEWNETCONF.to_ne_bytes());
        let all = Netconf {
            family: abi_u8(libc::AF_INET),
            ifindex: NETCONF_ALL,
            forwarding: Some(false),
        };
        assert_eq!(to_event(decode_one(&m)), Some(Event::Netconf(all)));
        let one = Netconf {
            family: abi_u8(libc::AF_INET6),
            ifindex: 7,
            forwarding: None,
        };
        let msg = RtnlMessage::Netconf {
            message_type: RTM_NEWNETCONF,
            conf: one,
        };
        assert_eq!(decode_one(&encode(msg.clone(), 0, 0)), msg);
        assert_eq!(to_event(msg), Some(Event::Netconf(one)));
        // Cut short inside an attribute: no event, no panic.
        assert!(frames(&m[..m.len() - 1]).next().unwrap().is_err());
    }

    #[test]
    fn parses_an_ipv6_multicast_message() {
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m.extend_from_slice(&[abi_u8(libc::AF_INET6), 128, 0, 0]);
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&20u16.to_ne_bytes());
        m.extend_from_slice(&IFA_MULTICAST.to_ne_bytes());
        let g: Ipv6Addr = "ff02::1:ff00:1".parse().unwrap();
        m.extend_from_slice(&g.octets());
        let len = u32::try_from(m.len()).unwrap();
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&RTM_NEWMULTICAST.to_ne_bytes());
        let msg = decode_one(&m);
        assert_eq!(
            to_event(msg.clone()),
            Some(Event::NewMcast(Mcast {
                index: 7,
                group: IpAddr::V6(g)
            }))
        );
        // Encoded here, it decodes to the same message.
        assert_eq!(decode_one(&encode(msg.clone(), 0, 0)), msg);
        assert!(frames(&m[..m.len() - 1]).next().unwrap().is_err());
        // A group of the wrong length for its family is no event.
        m[NLMSG_HDRLEN] = abi_u8(libc::AF_INET);
        assert_eq!(to_event(decode_one(&m)), None);
        // A message too short for its ifaddrmsg does not decode.
        let mut short = m[..NLMSG_HDRLEN + 4].to_vec();
        let len = u32::try_from(short.len()).unwrap();
        short[0..4].copy_from_slice(&len.to_ne_bytes());
        assert!(
            frames(&short)
                .next()
                .unwrap()
                .unwrap()
                .decode::<RtnlMessage>()
                .is_err()
        );
    }

    #[test]
    fn a_multicast_dump_request_is_an_ifaddrmsg() {
        let req = RtnlMessage::Mcast {
            message_type: RTM_GETMULTICAST,
            family: abi_u8(libc::AF_INET6),
            index: 0,
            group: None,
        };
        let bytes = encode(req.clone(), NLM_F_REQUEST | NLM_F_DUMP, 3);
        assert_eq!(bytes.len(), NLMSG_HDRLEN + IFADDRMSG_LEN);
        assert_eq!(bytes[NLMSG_HDRLEN], abi_u8(libc::AF_INET6));
        assert_eq!(decode_one(&bytes), req);
    }

    #[test]
    fn links_routes_and_addresses_round_trip() {
        let mut l = link_msg(4);
        l.attributes = vec![
            LinkAttribute::IfName("ipvl0".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Mtu(1500),
            LinkAttribute::LinkNetNsId(3),
        ];
        let bytes = encode(
            RtnlMessage::Route(RouteNetlinkMessage::NewLink(l)),
            NLM_F_MULTIPART,
            1,
        );
        let RtnlMessage::Route(RouteNetlinkMessage::NewLink(l)) = decode_one(&bytes) else {
            panic!("not a link")
        };
        let link = parse_link(l);
        assert_eq!(
            (link.index, link.name.as_str(), link.mac, link.mtu),
            (4, "ipvl0", Some([2, 0, 0, 0, 0, 1]), 1500)
        );
        assert_eq!(link.link_netnsid, Some(3));

        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.header.destination_prefix_length = 24;
        r.header.table = RouteHeader::RT_TABLE_MAIN;
        r.header.kind = RouteType::Unicast;
        r.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet("10.1.2.0".parse().unwrap())),
            RouteAttribute::Gateway(RouteAddress::Inet("10.1.2.1".parse().unwrap())),
            RouteAttribute::Oif(4),
            RouteAttribute::Priority(100),
        ];
        let bytes = encode(RtnlMessage::Route(RouteNetlinkMessage::NewRoute(r)), 0, 2);
        let RtnlMessage::Route(RouteNetlinkMessage::NewRoute(r)) = decode_one(&bytes) else {
            panic!("not a route")
        };
        assert_eq!(
            parse_route(r),
            Route {
                dst: "10.1.2.0".parse().unwrap(),
                prefix: 24,
                gw: Some("10.1.2.1".parse().unwrap()),
                oif: Some(4),
                table: RT_TABLE_MAIN,
                priority: Some(100),
            }
        );

        let a = Addr {
            index: 4,
            ip: "10.1.2.3".parse().unwrap(),
            prefix: 24,
        };
        let bytes = encode(
            RtnlMessage::Route(RouteNetlinkMessage::NewAddress(Rtnl::addr_msg(&a))),
            0,
            3,
        );
        assert_eq!(to_event(decode_one(&bytes)), Some(Event::NewAddr(a)));
    }
}

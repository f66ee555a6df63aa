//! Routes, policy rules and neighbour entries, and the host routes, neighbour and proxy
//! entries ipvlan-rs makes and finds again by their protocol ([`PROTO_IPVLAN`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Result, Rtnl, RtnlError, RtnlMessage, ip_family};

/// The main routing table (`RT_TABLE_MAIN`).
pub const RT_TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A unicast route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The destination network (the unspecified address for a default route).
    pub dst: IpAddr,
    pub prefix: u8,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    /// The metric.
    pub priority: Option<u32>,
}

/// The protocol number ipvlan-rs gives the routes and neighbour entries it makes
/// (`ip route` and `ip neigh` show `proto 250`), by which it finds them again.
pub const PROTO_IPVLAN: u8 = 0xfa;

/// A host route, neighbour entry or proxy entry of ipvlan-rs's own ([`PROTO_IPVLAN`]):
/// one address on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnEntry {
    pub ip: IpAddr,
    pub index: u32,
}

/// Which of [`OwnEntry`]'s kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnKind {
    /// `ip route add IP dev DEV proto 250` (main table, scope link).
    Route,
    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent proto 250`.
    Neighbour([u8; 6]),
    /// `ip -6 neigh add proxy IP dev DEV proto 250`.
    Proxy,
}

fn route_ip(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

fn inet_family(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

pub(super) fn parse_route(r: RouteMessage) -> Route {
    let mut route = Route {
        dst: match r.header.address_family {
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        },
        prefix: r.header.destination_prefix_length,
        gw: None,
        oif: None,
        table: u32::from(r.header.table),
        priority: None,
    };
    for a in r.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                if let Some(ip) = route_ip(d) {
                    route.dst = ip;
                }
            }
            RouteAttribute::Gateway(g) => route.gw = route_ip(g),
            RouteAttribute::Oif(o) => route.oif = Some(o),
            RouteAttribute::Table(t) => route.table = t,
            RouteAttribute::Priority(p) => route.priority = Some(p),
            _ => {}
        }
    }
    route
}

impl Rtnl {
    /// The unicast routes of every table (IPv4 and IPv6).
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            for answer in self.exchange(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)? {
                if let RtnlMessage::Route(RouteNetlinkMessage::NewRoute(r)) = answer
                    && r.header.kind == RouteType::Unicast
                {
                    out.push(parse_route(r));
                }
            }
        }
        Ok(out)
    }

    /// `ip route add DST/PREFIX [via GW] [dev OIF] [metric PRIORITY] table TABLE proto
    /// boot`: scope link without a gateway, universe with one.
    pub fn add_route(&mut self, r: &Route) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = ip_family(r.dst);
        m.header.destination_prefix_length = r.prefix;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if r.gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.kind = RouteType::Unicast;
        m.header.table = u8::try_from(r.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.attributes.push(RouteAttribute::Table(r.table));
        if r.prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(r.dst)));
        }
        if let Some(gw) = r.gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = r.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(p) = r.priority {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        self.ack(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// `ip route del DST/PREFIX [dev OIF] table TABLE` (any gateway, type or metric).
    pub fn del_route(&mut self, r: &Route) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = ip_family(r.dst);
        m.header.destination_prefix_length = r.prefix;
        m.header.table = u8::try_from(r.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.header.scope = RouteScope::NoWhere;
        m.attributes.push(RouteAttribute::Table(r.table));
        if r.prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(r.dst)));
        }
        if let Some(oif) = r.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        self.ack(RouteNetlinkMessage::DelRoute(m), 0)
    }

    /// `ip [-6] route add local default dev DEV table TABLE` (`add`), or its removal:
    /// everything looked up in TABLE is delivered locally.
    pub fn local_default_route(&mut self, add: bool, v6: bool, table: u32, dev: u32) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = inet_family(v6);
        m.header.kind = RouteType::Local;
        m.header.scope = RouteScope::Host;
        m.header.protocol = RouteProtocol::Static;
        m.attributes = vec![RouteAttribute::Table(table), RouteAttribute::Oif(dev)];
        if add {
            self.ack(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
        } else {
            self.ack(RouteNetlinkMessage::DelRoute(m), 0)
        }
    }

    /// `ip [-6] rule add fwmark MARK lookup TABLE pref PREF` (`add`), or its removal.
    pub fn fwmark_rule(
        &mut self,
        add: bool,
        v6: bool,
        mark: u32,
        table: u32,
        pref: u32,
    ) -> Result<()> {
        let mut m = RuleMessage::default();
        m.header.family = inet_family(v6);
        m.header.action = RuleAction::ToTable;
        m.attributes = vec![
            RuleAttribute::FwMark(mark),
            RuleAttribute::FwMask(u32::MAX),
            RuleAttribute::Table(table),
            RuleAttribute::Priority(pref),
        ];
        if add {
            self.ack(RouteNetlinkMessage::NewRule(m), NLM_F_CREATE | NLM_F_EXCL)
        } else {
            self.ack(RouteNetlinkMessage::DelRule(m), 0)
        }
    }

    /// `ip [-6] rule add iif IIF pref PREF lookup TABLE` (`Some(TABLE)`) or `... blackhole`
    /// (`None`) (`add`), or its removal.
    pub fn iif_rule(
        &mut self,
        add: bool,
        v6: bool,
        iif: &str,
        table: Option<u32>,
        pref: u32,
    ) -> Result<()> {
        let mut m = RuleMessage::default();
        m.header.family = inet_family(v6);
        m.attributes = vec![
            RuleAttribute::Iifname(iif.to_string()),
            RuleAttribute::Priority(pref),
        ];
        match table {
            Some(t) => {
                m.header.action = RuleAction::ToTable;
                m.attributes.push(RuleAttribute::Table(t));
            }
            None => m.header.action = RuleAction::Blackhole,
        }
        if add {
            self.ack(RouteNetlinkMessage::NewRule(m), NLM_F_CREATE | NLM_F_EXCL)
        } else {
            self.ack(RouteNetlinkMessage::DelRule(m), 0)
        }
    }

    /// The priorities of the rules of one family that match packets arriving on
    /// `iif`, each with its table (`None` for a blackhole rule).
    pub fn iif_rules(&mut self, v6: bool, iif: &str) -> Result<Vec<(u32, Option<u32>)>> {
        let mut m = RuleMessage::default();
        m.header.family = inet_family(v6);
        let mut out = Vec::new();
        for answer in self.exchange(RouteNetlinkMessage::GetRule(m), NLM_F_DUMP)? {
            let RtnlMessage::Route(RouteNetlinkMessage::NewRule(r)) = answer else {
                continue;
            };
            let mut on = false;
            let (mut pref, mut table) = (0, u32::from(r.header.table));
            for a in &r.attributes {
                match a {
                    RuleAttribute::Iifname(n) => on = n == iif,
                    RuleAttribute::Priority(p) => pref = *p,
                    RuleAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if on {
                let table = (r.header.action == RuleAction::ToTable).then_some(table);
                out.push((pref, table));
            }
        }
        Ok(out)
    }

    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent` (`Some(MAC)`), or
    /// `ip neigh del IP dev DEV` (`None`).
    pub fn permanent_neighbour(
        &mut self,
        dev: u32,
        ip: IpAddr,
        mac: Option<[u8; 6]>,
    ) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = ip_family(ip);
        m.header.ifindex = dev;
        m.header.state = NeighbourState::Permanent;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::from(ip)));
        match mac {
            Some(mac) => {
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
                self.ack(
                    RouteNetlinkMessage::NewNeighbour(m),
                    NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE,
                )
            }
            None => self.ack(RouteNetlinkMessage::DelNeighbour(m), 0),
        }
    }

    /// Every route (main table), neighbour and proxy entry that carries
    /// [`PROTO_IPVLAN`].
    pub fn own_entries(&mut self) -> Result<Vec<(OwnKind, OwnEntry)>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            let mut answers = self.exchange(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)?;
            for proxy in [false, true] {
                let mut m = NeighbourMessage::default();
                m.header.family = family;
                if proxy {
                    m.header.flags = NeighbourFlags::Proxy;
                }
                answers.extend(self.exchange(RouteNetlinkMessage::GetNeighbour(m), NLM_F_DUMP)?);
            }
            for answer in answers {
                match answer {
                    RtnlMessage::Route(RouteNetlinkMessage::NewRoute(r))
                        if u8::from(r.header.protocol) == PROTO_IPVLAN =>
                    {
                        let r = parse_route(r);
                        if let Some(index) = r.oif {
                            out.push((OwnKind::Route, OwnEntry { ip: r.dst, index }));
                        }
                    }
                    RtnlMessage::Route(RouteNetlinkMessage::NewNeighbour(n)) => {
                        let (mut ip, mut mac, mut ours) = (None, [0u8; 6], false);
                        for a in &n.attributes {
                            match a {
                                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                                    ip = Some(IpAddr::V4(*v4));
                                }
                                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                                    ip = Some(IpAddr::V6(*v6));
                                }
                                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                                    mac.copy_from_slice(l);
                                }
                                NeighbourAttribute::Protocol(p) => {
                                    ours = u8::from(*p) == PROTO_IPVLAN;
                                }
                                _ => {}
                            }
                        }
                        let kind = if n.header.flags.contains(NeighbourFlags::Proxy) {
                            OwnKind::Proxy
                        } else {
                            OwnKind::Neighbour(mac)
                        };
                        if let (Some(ip), true) = (ip, ours) {
                            let index = n.header.ifindex;
                            out.push((kind, OwnEntry { ip, index }));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Adds (`add`) or removes an entry of `kind`, marked [`PROTO_IPVLAN`]. A neighbour
    /// entry replaces one that is there; a route does not: then `Ok(false)`. Removing
    /// what is not there is no error.
    pub fn set_own_entry(&mut self, kind: OwnKind, e: OwnEntry, add: bool) -> Result<bool> {
        let proto = RouteProtocol::from(PROTO_IPVLAN);
        let res = match kind {
            OwnKind::Route => {
                let mut m = RouteMessage::default();
                m.header.address_family = ip_family(e.ip);
                m.header.destination_prefix_length = if e.ip.is_ipv4() { 32 } else { 128 };
                m.header.protocol = proto;
                m.header.scope = RouteScope::Link;
                m.header.kind = RouteType::Unicast;
                m.header.table = RouteHeader::RT_TABLE_MAIN;
                m.attributes = vec![
                    RouteAttribute::Destination(RouteAddress::from(e.ip)),
                    RouteAttribute::Oif(e.index),
                ];
                if add {
                    self.ack(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
                } else {
                    self.ack(RouteNetlinkMessage::DelRoute(m), 0)
                }
            }
            OwnKind::Neighbour(_) | OwnKind::Proxy => {
                let mut m = NeighbourMessage::default();
                m.header.family = ip_family(e.ip);
                m.header.ifindex = e.index;
                m.attributes
                    .push(NeighbourAttribute::Destination(match e.ip {
                        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
                    }));
                if let OwnKind::Neighbour(mac) = kind {
                    m.header.state = NeighbourState::Permanent;
                    m.attributes
                        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
                } else {
                    m.header.flags = NeighbourFlags::Proxy;
                }
                m.attributes.push(NeighbourAttribute::Protocol(proto));
                if add {
                    self.ack(
                        RouteNetlinkMessage::NewNeighbour(m),
                        NLM_F_CREATE | NLM_F_REPLACE,
                    )
                } else {
                    self.ack(RouteNetlinkMessage::DelNeighbour(m), 0)
                }
            }
        };
        match res {
            Ok(()) => Ok(true),
            Err(RtnlError::Kernel { errno }) if add && errno == libc::EEXIST => Ok(false),
            Err(RtnlError::Kernel { errno })
                if !add
                    && (errno == libc::ENOENT || errno == libc::ESRCH || errno == libc::ENODEV) =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}

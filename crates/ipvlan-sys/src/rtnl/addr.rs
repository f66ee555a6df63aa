//! Interface addresses (`RTM_{GET,NEW,DEL}ADDR`) and the multicast groups joined on
//! interfaces (`RTM_GETMULTICAST`).

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

use super::{RTM_GETMULTICAST, Result, Rtnl, RtnlMessage, ip_family};
use crate::sock::abi_u8;

/// An address whose duplicate address detection has not finished.
pub const IFA_F_TENTATIVE: u32 = 0x40;
/// An address whose duplicate address detection found a duplicate.
pub const IFA_F_DADFAILED: u32 = 0x08;

/// An interface address (`ifa_address`, spec §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub ip: IpAddr,
    pub prefix: u8,
}

/// A multicast group joined on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mcast {
    pub index: u32,
    pub group: IpAddr,
}

pub(super) fn parse_addr(msg: AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    for a in msg.attributes {
        match a {
            AddressAttribute::Address(ip) => address = Some(ip),
            AddressAttribute::Local(ip) => local = Some(ip),
            _ => {}
        }
    }
    // `ifa_address` is what the kernel driver records (spec §2.1); IPv6 carries only it.
    Some(Addr {
        index: msg.header.index,
        ip: address.or(local)?,
        prefix: msg.header.prefix_len,
    })
}

pub(super) fn mcast_of(msg: RtnlMessage) -> Option<(u16, Mcast)> {
    match msg {
        RtnlMessage::Mcast {
            message_type,
            index,
            group: Some(group),
            ..
        } => Some((message_type, Mcast { index, group })),
        _ => None,
    }
}

/// The broadcast address of an IPv4 subnet that has one (a prefix shorter than /31).
fn broadcast(ip: IpAddr, prefix: u8) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) if prefix < 31 => Some(Ipv4Addr::from(u32::from(v4) | (u32::MAX >> prefix))),
        _ => None,
    }
}

impl Rtnl {
    /// Every address of this namespace (IPv4 and IPv6).
    pub fn addrs(&mut self) -> Result<Vec<Addr>> {
        Ok(self
            .addrs_with_flags()?
            .into_iter()
            .map(|(a, _)| a)
            .collect())
    }

    /// Every address of this namespace with its `IFA_F_*` flags (`IFA_FLAGS` when the
    /// kernel sends it, else the header's eight bits): whether DAD is still running
    /// ([`IFA_F_TENTATIVE`]) or failed ([`IFA_F_DADFAILED`]).
    pub fn addrs_with_flags(&mut self) -> Result<Vec<(Addr, u32)>> {
        let answers = self.exchange(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RtnlMessage::Route(RouteNetlinkMessage::NewAddress(a)) => {
                    let flags = a
                        .attributes
                        .iter()
                        .find_map(|at| match at {
                            AddressAttribute::Flags(f) => Some(f.bits()),
                            _ => None,
                        })
                        .unwrap_or_else(|| u32::from(a.header.flags.bits()));
                    parse_addr(a).map(|addr| (addr, flags))
                }
                _ => None,
            })
            .collect())
    }

    pub(super) fn addr_msg(a: &Addr) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = ip_family(a.ip);
        m.header.prefix_len = a.prefix;
        m.header.index = a.index;
        m.attributes.push(AddressAttribute::Local(a.ip));
        m.attributes.push(AddressAttribute::Address(a.ip));
        m
    }

    pub fn add_addr(&mut self, a: &Addr) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewAddress(Self::addr_msg(a)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_addr(&mut self, a: &Addr) -> Result<()> {
        self.ack(RouteNetlinkMessage::DelAddress(Self::addr_msg(a)), 0)
    }

    /// `ip addr add IP/PREFIX brd + dev DEV`: as [`Rtnl::add_addr`], and an IPv4
    /// address with a prefix shorter than /31 gets its subnet's broadcast address.
    pub fn add_addr_with_broadcast(&mut self, a: &Addr) -> Result<()> {
        let mut m = Self::addr_msg(a);
        if let Some(brd) = broadcast(a.ip, a.prefix) {
            m.attributes.push(AddressAttribute::Broadcast(brd));
        }
        self.ack(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Multicast groups joined on every interface (IPv4 and IPv6).
    pub fn mcasts(&mut self) -> Result<Vec<Mcast>> {
        let mut out = Vec::new();
        for family in const { [abi_u8(libc::AF_INET), abi_u8(libc::AF_INET6)] } {
            let req = RtnlMessage::Mcast {
                message_type: RTM_GETMULTICAST,
                family,
                index: 0,
                group: None,
            };
            for m in self.sock.request(req, NLM_F_DUMP)? {
                out.extend(mcast_of(m).map(|(_, m)| m));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_only_for_ipv4_subnets_that_have_one() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            broadcast(v4("10.1.2.3"), 24),
            Some("10.1.2.255".parse().unwrap())
        );
        assert_eq!(broadcast(v4("10.1.2.3"), 0), Some(Ipv4Addr::BROADCAST));
        assert_eq!(broadcast(v4("10.1.2.3"), 31), None);
        assert_eq!(broadcast(v4("10.1.2.3"), 32), None);
        assert_eq!(broadcast(v4("fd00::1"), 64), None);
    }
}

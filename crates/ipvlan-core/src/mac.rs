//! The Ethernet MAC address: the one type every crate uses for it.
//!
//! Written as iproute2 prints it (`52:54:00:12:34:56`, lower case) by `Display`, read
//! back by `FromStr`, and carried in JSON as that string.

use core::fmt;
use core::str::FromStr;

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// The 802.3x PAUSE destination, `01:80:c2:00:00:01`.
    pub const PAUSE: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x01]);

    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Whether the group bit is set: true for multicast and for broadcast.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit is clear.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Whether this is the 802.3x PAUSE destination.
    pub fn is_pause(&self) -> bool {
        *self == Self::PAUSE
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        Self(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> Self {
        mac.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A string that is not six colon-separated hex octets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?} (want six hex octets separated by ':')")]
pub struct BadMacAddr(pub String);

impl FromStr for MacAddr {
    type Err = BadMacAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMacAddr(s.to_string());
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for o in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *o = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(octets))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0xab]);

    #[test]
    fn shown_and_read_as_iproute2_does() {
        assert_eq!(M.to_string(), "52:54:00:12:34:ab");
        assert_eq!("52:54:00:12:34:ab".parse(), Ok(M));
        assert_eq!("52:54:0:12:34:AB".parse(), Ok(M));
        assert_eq!(MacAddr::BROADCAST.to_string(), "ff:ff:ff:ff:ff:ff");
    }

    #[test]
    fn a_bad_string_is_named_in_the_error() {
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:zz",
            "525:4:00:12:34:56",
            "52:54:00:12::56",
            "+5:54:00:12:34:56",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert_eq!(e, BadMacAddr(bad.to_string()));
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn json_is_the_string_form() {
        let j = serde_json::to_string(&M).unwrap();
        assert_eq!(j, "\"52:54:00:12:34:ab\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&j).unwrap(), M);
        assert!(serde_json::from_str::<MacAddr>("\"52:54\"").is_err());
    }

    #[test]
    fn group_bit() {
        assert!(MacAddr::BROADCAST.is_multicast() && MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr([0x33, 0x33, 0, 0, 0, 1]).is_multicast());
        assert!(MacAddr::PAUSE.is_multicast() && MacAddr::PAUSE.is_pause());
        assert!(M.is_unicast() && !M.is_multicast() && !M.is_broadcast());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 0]).is_unicast());
        assert!(!MacAddr::PAUSE.is_broadcast() && !MacAddr::BROADCAST.is_pause());
        assert!(!MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]).is_pause());
    }
}

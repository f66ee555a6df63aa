//! Port mode and flags (spec §1), with their netlink numbers and iproute2 words.

use core::fmt;
use core::str::FromStr;

/// Why a mode or flags value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown mode {0:?} (expected l2, l3 or l3s)")]
    UnknownMode(String),
    #[error("unknown flags {0:?} (expected bridge, private or vepa)")]
    UnknownFlags(String),
    /// `IFLA_IPVLAN_MODE` ≥ 3 (the kernel's `EINVAL`).
    #[error("invalid mode value {0}")]
    InvalidMode(u16),
    /// `IFLA_IPVLAN_FLAGS` with unknown bits, or private and vepa together (`EINVAL`).
    #[error("invalid flags value {0:#x}")]
    InvalidFlags(u16),
}

/// The port-wide operating mode. The kernel's default is L3.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    L2,
    #[default]
    L3,
    L3s,
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::L2 => "l2",
            Mode::L3 => "l3",
            Mode::L3s => "l3s",
        }
    }

    /// The `IFLA_IPVLAN_MODE` value: 0, 1, 2.
    pub const fn to_raw(self) -> u16 {
        match self {
            Mode::L2 => 0,
            Mode::L3 => 1,
            Mode::L3s => 2,
        }
    }

    pub const fn from_raw(raw: u16) -> Result<Self, ConfigError> {
        match raw {
            0 => Ok(Mode::L2),
            1 => Ok(Mode::L3),
            2 => Ok(Mode::L3s),
            _ => Err(ConfigError::InvalidMode(raw)),
        }
    }

    /// L3 and L3S slaves carry `IFF_NOARP` (spec §1.4, §4.3).
    pub const fn is_noarp(self) -> bool {
        !matches!(self, Mode::L2)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "l2" => Ok(Mode::L2),
            "l3" => Ok(Mode::L3),
            "l3s" => Ok(Mode::L3s),
            _ => Err(ConfigError::UnknownMode(s.to_owned())),
        }
    }
}

/// The port-wide flags: exactly one of bridge (no bit), private (0x1), vepa (0x2).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Flags {
    #[default]
    Bridge,
    Private,
    Vepa,
}

impl Flags {
    pub const PRIVATE_BIT: u16 = 0x1;
    pub const VEPA_BIT: u16 = 0x2;

    pub const fn as_str(self) -> &'static str {
        match self {
            Flags::Bridge => "bridge",
            Flags::Private => "private",
            Flags::Vepa => "vepa",
        }
    }

    /// The `IFLA_IPVLAN_FLAGS` value.
    pub const fn to_bits(self) -> u16 {
        match self {
            Flags::Bridge => 0,
            Flags::Private => Self::PRIVATE_BIT,
            Flags::Vepa => Self::VEPA_BIT,
        }
    }

    /// Refuses unknown bits and private+vepa together (spec §1.4).
    pub const fn from_bits(bits: u16) -> Result<Self, ConfigError> {
        match bits {
            0 => Ok(Flags::Bridge),
            Self::PRIVATE_BIT => Ok(Flags::Private),
            Self::VEPA_BIT => Ok(Flags::Vepa),
            _ => Err(ConfigError::InvalidFlags(bits)),
        }
    }

    pub const fn is_private(self) -> bool {
        matches!(self, Flags::Private)
    }

    pub const fn is_vepa(self) -> bool {
        matches!(self, Flags::Vepa)
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Flags {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bridge" => Ok(Flags::Bridge),
            "private" => Ok(Flags::Private),
            "vepa" => Ok(Flags::Vepa),
            _ => Err(ConfigError::UnknownFlags(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_default_is_l3() {
        assert_eq!(Mode::default(), Mode::L3);
    }

    #[test]
    fn mode_strings() {
        for m in [Mode::L2, Mode::L3, Mode::L3s] {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
            assert_eq!(m.to_string(), m.as_str());
        }
        for bad in ["L2", "l2 ", "", "l4", "l3S", "bridge"] {
            assert_eq!(
                bad.parse::<Mode>(),
                Err(ConfigError::UnknownMode(bad.into()))
            );
        }
    }

    #[test]
    fn mode_raw() {
        for m in [Mode::L2, Mode::L3, Mode::L3s] {
            assert_eq!(Mode::from_raw(m.to_raw()), Ok(m));
        }
        assert_eq!(Mode::L2.to_raw(), 0);
        assert_eq!(Mode::L3s.to_raw(), 2);
        assert_eq!(Mode::from_raw(3), Err(ConfigError::InvalidMode(3)));
        assert_eq!(
            Mode::from_raw(u16::MAX),
            Err(ConfigError::InvalidMode(u16::MAX))
        );
    }

    #[test]
    fn noarp() {
        assert!(!Mode::L2.is_noarp());
        assert!(Mode::L3.is_noarp());
        assert!(Mode::L3s.is_noarp());
    }

    #[test]
    fn flags_strings() {
        assert_eq!(Flags::default(), Flags::Bridge);
        for f in [Flags::Bridge, Flags::Private, Flags::Vepa] {
            assert_eq!(f.as_str().parse::<Flags>(), Ok(f));
            assert_eq!(f.to_string(), f.as_str());
        }
        for bad in ["Bridge", "private vepa", "", "l2"] {
            assert_eq!(
                bad.parse::<Flags>(),
                Err(ConfigError::UnknownFlags(bad.into()))
            );
        }
    }

    #[test]
    fn flags_bits() {
        assert_eq!(Flags::Bridge.to_bits(), 0);
        assert_eq!(Flags::Private.to_bits(), 1);
        assert_eq!(Flags::Vepa.to_bits(), 2);
        for f in [Flags::Bridge, Flags::Private, Flags::Vepa] {
            assert_eq!(Flags::from_bits(f.to_bits()), Ok(f));
        }
        for bad in [0x3, 0x4, 0x5, 0x8000, u16::MAX] {
            assert_eq!(Flags::from_bits(bad), Err(ConfigError::InvalidFlags(bad)));
        }
        assert!(Flags::Private.is_private() && !Flags::Private.is_vepa());
        assert!(Flags::Vepa.is_vepa() && !Flags::Vepa.is_private());
        assert!(!Flags::Bridge.is_vepa() && !Flags::Bridge.is_private());
    }

    #[test]
    fn serde_words() {
        use serde::Deserialize;
        use serde::de::value::{Error, StrDeserializer};
        let de = |s| StrDeserializer::<Error>::new(s);
        assert_eq!(Mode::deserialize(de("l3s")), Ok(Mode::L3s));
        assert_eq!(Mode::deserialize(de("l2")), Ok(Mode::L2));
        assert!(Mode::deserialize(de("L2")).is_err());
        assert_eq!(Flags::deserialize(de("vepa")), Ok(Flags::Vepa));
        assert_eq!(Flags::deserialize(de("private")), Ok(Flags::Private));
        assert!(Flags::deserialize(de("Bridge")).is_err());
    }
}

//! When a port's new nft programs are applied: at once, or coalesced with the changes
//! that follow. Every `nft` run reads the table back, so a burst of slaves created or
//! deleted costs one run instead of one each.
//!
//! Coalesced: slaves added or removed (and the addresses that went with them), and
//! addresses learned or forgotten while an nft run has just ended (a burst: 500 slaves
//! coming up learn 500 link-locals). At once: everything else, so that a lone new
//! address, a mode or a flag takes effect before the request that made it is answered.
//!
//! Pure: decisions over the programs and the time, so they are tested without root.

use std::time::{Duration, Instant};

use ipvlan_core::nftprog::Program;

/// Coalesced changes are applied once the port has been quiet this long...
pub const NFT_QUIET: Duration = Duration::from_millis(30);
/// ...or at the latest this long after the first of them.
pub const NFT_MAX_DELAY: Duration = Duration::from_secs(1);
/// The same for changes that only remove: slaves deleted (their chains hook devices
/// that are gone, their addresses are out of the fast path's maps at once), so a
/// stream of deletions costs an nft run every few seconds, not one each.
pub const NFT_REMOVAL_QUIET: Duration = Duration::from_secs(1);
pub const NFT_REMOVAL_MAX_DELAY: Duration = Duration::from_secs(5);

/// How a change of a port's programs is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staging {
    AtOnce,
    /// With the changes that follow; `removal`: it only removes.
    Coalesced {
        removal: bool,
    },
}

/// How `new` (and an L3S table equal to the applied one or not: `same_l3s`) replaces
/// the applied `old`; `burst`: an nft run of the port has just ended.
pub fn staging(old: Option<&Program>, new: &Program, same_l3s: bool, burst: bool) -> Staging {
    let Some(old) = old.filter(|_| same_l3s) else {
        return Staging::AtOnce;
    };
    let only_addresses = burst && new.only_elements_differ_from(old);
    if only_addresses || new.only_parts_come_or_go_from(old) {
        Staging::Coalesced {
            removal: new.only_removes_from(old),
        }
    } else {
        Staging::AtOnce
    }
}

/// A port's coalesced changes over time.
#[derive(Debug, Default)]
pub struct Coalescing {
    /// When the oldest unapplied change was made, and the latest.
    since: Option<Instant>,
    last: Option<Instant>,
    /// Every change since `since` only removes (see [`NFT_REMOVAL_QUIET`]).
    removals_only: bool,
    /// When the port's last nft run ended.
    ran: Option<Instant>,
}

impl Coalescing {
    /// An nft run of the port ended so recently that changes of addresses are a burst.
    pub fn in_burst(&self, now: Instant) -> bool {
        self.ran
            .is_some_and(|r| now.saturating_duration_since(r) < NFT_QUIET)
    }

    /// A change was held back at `now`.
    pub fn held(&mut self, now: Instant, removal: bool) {
        if self.since.is_none() {
            self.since = Some(now);
            self.removals_only = true;
        }
        self.removals_only &= removal;
        self.last = Some(now);
    }

    /// Changes are held back.
    pub fn waiting(&self) -> bool {
        self.since.is_some()
    }

    /// The held changes are due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        let (Some(since), Some(last)) = (self.since, self.last) else {
            return false;
        };
        let (quiet, max) = if self.removals_only {
            (NFT_REMOVAL_QUIET, NFT_REMOVAL_MAX_DELAY)
        } else {
            (NFT_QUIET, NFT_MAX_DELAY)
        };
        now.saturating_duration_since(last) >= quiet || now.saturating_duration_since(since) >= max
    }

    /// Nothing is held back any more (applied, or given up).
    pub fn cleared(&mut self) {
        self.since = None;
    }

    /// An nft run of the port ended at `now`.
    pub fn ran(&mut self, now: Instant) {
        self.ran = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard;
    use ipvlan_core::SlaveId;
    use std::net::IpAddr;

    fn guard_of(ends: &[u16], addrs: &[&str], l3s: bool) -> Program {
        let ends: Vec<(SlaveId, String)> = ends
            .iter()
            .map(|&i| (SlaveId(i), format!("ivh3.{i}")))
            .collect();
        let addrs = addrs.iter().map(|a| a.parse::<IpAddr>().unwrap());
        guard::program(3, "eth0", &ends, addrs, l3s)
    }

    #[test]
    fn slaves_coming_and_going_are_coalesced_anything_else_is_not() {
        let old = guard_of(&[1], &["10.0.0.1"], false);
        // A new slave comes without addresses: it learns them later.
        let added = guard_of(&[1, 2], &["10.0.0.1"], false);
        let added_with_address = guard_of(&[1, 2], &["10.0.0.1", "10.0.0.2"], false);
        let removed = guard_of(&[], &[], false);
        let new_addr = guard_of(&[1], &["10.0.0.1", "10.0.0.9"], false);
        let reshaped = guard_of(&[1], &["10.0.0.1"], true);
        let coalesced = |removal| Staging::Coalesced { removal };
        assert_eq!(staging(None, &old, true, false), Staging::AtOnce);
        assert_eq!(staging(Some(&old), &added, true, false), coalesced(false));
        assert_eq!(staging(Some(&old), &removed, true, false), coalesced(true));
        assert_eq!(
            staging(Some(&old), &added_with_address, true, false),
            Staging::AtOnce
        );
        assert_eq!(staging(Some(&old), &reshaped, true, true), Staging::AtOnce);
        // A changed L3S table is applied at once, whatever the rest.
        assert_eq!(staging(Some(&old), &added, false, true), Staging::AtOnce);
        // A lone address at once; in a burst, with the others.
        assert_eq!(staging(Some(&old), &new_addr, true, false), Staging::AtOnce);
        assert_eq!(staging(Some(&old), &new_addr, true, true), coalesced(false));
        let forgot = guard_of(&[1], &[], false);
        assert_eq!(staging(Some(&old), &forgot, true, true), coalesced(true));
    }

    #[test]
    fn held_changes_fall_due_when_quiet_or_at_the_latest_after_the_max_delay() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = Coalescing::default();
        assert!(!c.waiting() && !c.due(t0));
        c.held(t0, false);
        assert!(c.waiting());
        assert!(!c.due(t0 + ms(29)));
        assert!(c.due(t0 + NFT_QUIET));
        // A change every 20 ms keeps it quiet never: due after the max delay.
        let mut t = t0;
        while t < t0 + NFT_MAX_DELAY - ms(20) {
            t += ms(20);
            c.held(t, false);
            assert!(!c.due(t + ms(10)));
        }
        assert!(c.due(t0 + NFT_MAX_DELAY));
        c.cleared();
        assert!(!c.waiting() && !c.due(t0 + NFT_MAX_DELAY));
    }

    #[test]
    fn removals_alone_wait_longer_and_one_addition_shortens_the_wait() {
        let t0 = Instant::now();
        let mut c = Coalescing::default();
        c.held(t0, true);
        assert!(!c.due(t0 + NFT_QUIET));
        assert!(c.due(t0 + NFT_REMOVAL_QUIET));
        c.held(t0 + NFT_REMOVAL_QUIET / 2, true);
        assert!(!c.due(t0 + NFT_REMOVAL_QUIET));
        c.held(t0 + NFT_REMOVAL_QUIET / 2, false);
        assert!(c.due(t0 + NFT_REMOVAL_QUIET / 2 + NFT_QUIET));
    }

    #[test]
    fn a_burst_is_the_moment_right_after_a_run() {
        let t0 = Instant::now();
        let mut c = Coalescing::default();
        assert!(!c.in_burst(t0));
        c.ran(t0);
        assert!(c.in_burst(t0 + NFT_QUIET / 2));
        assert!(!c.in_burst(t0 + NFT_QUIET));
    }
}

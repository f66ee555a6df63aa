//! A port's nft tables: the programs applied, the programs waiting to be (see
//! [`super::coalesce`]), and reading back what the kernel backend's program dropped.

use std::time::Instant;

use ipvlan_core::SlaveId;
use ipvlan_core::nftprog::Program;
use ipvlan_sys::{NetNs, nft};

use super::coalesce::{Coalescing, Staging, staging};
use super::tables::{Gen, Listed};
use ipvlan_core::{DropReason, compile};

/// Frames the kernel backend's program dropped for one slave, by reason.
pub type ProgramDrops = (SlaveId, DropReason, u64);

/// One port's nft tables.
#[derive(Debug, Default)]
pub(super) struct Nft {
    /// The programs last applied: the guard or the kernel backend's program, and the
    /// L3S table.
    pub(super) prog: Option<Program>,
    pub(super) l3s_prog: Option<Program>,
    /// Programs computed but not applied yet.
    pending: Option<(Program, Option<Program>)>,
    coalescing: Coalescing,
    /// What the kernel lists for the applied tables, and the ruleset generation our
    /// last apply made (see `tables`).
    pub(super) listed: Listed,
}

impl Nft {
    /// Takes the port's new programs; `true` if they must be applied at once, `false`
    /// if they wait for [`Self::due`].
    pub(super) fn stage(&mut self, prog: Program, l3s_prog: Option<Program>, now: Instant) -> bool {
        let same_l3s = self.l3s_prog == l3s_prog;
        let how = staging(
            self.prog.as_ref(),
            &prog,
            same_l3s,
            self.coalescing.in_burst(now),
        );
        self.pending = Some((prog, l3s_prog));
        match how {
            Staging::AtOnce => true,
            Staging::Coalesced { removal } => {
                self.coalescing.held(now, removal);
                false
            }
        }
    }

    pub(super) fn waiting(&self) -> bool {
        self.coalescing.waiting()
    }

    pub(super) fn due(&self, now: Instant) -> bool {
        self.coalescing.due(now)
    }

    /// The applied programs.
    pub(super) fn programs(&self) -> Vec<&Program> {
        self.prog.iter().chain(self.l3s_prog.iter()).collect()
    }

    /// Forgets what was applied: the next programs replace the tables whole.
    pub(super) fn forget(&mut self) {
        self.prog = None;
        self.l3s_prog = None;
    }

    /// Applies the pending programs: only what changed since the last applied ones, or
    /// the whole tables if the update is refused (something else changed them).
    pub(super) fn apply(&mut self, ns: &NetNs, generation: &mut Gen) -> Result<(), nft::NftError> {
        self.coalescing.cleared();
        let Some((prog, l3s_prog)) = self.pending.take() else {
            return Ok(());
        };
        let mut script = prog.update_from(self.prog.as_ref()).unwrap_or_default();
        if let Some(l) = &l3s_prog {
            script += &l.update_from(self.l3s_prog.as_ref()).unwrap_or_default();
        }
        if script.is_empty() {
            return Ok(());
        }
        let before = generation.get();
        let applied = nft::apply(ns, &script).or_else(|e| {
            tracing::debug!("incremental nft update refused ({e}); replacing the tables");
            let mut full = prog.full();
            if let Some(l) = &l3s_prog {
                full += &l.full();
            }
            nft::apply(ns, &full)
        });
        self.coalescing.ran(Instant::now());
        applied?;
        self.prog = Some(prog);
        self.l3s_prog = l3s_prog;
        self.listed = generation.applied(before);
        Ok(())
    }
}

/// What the kernel backend's program in table `table` of `ns` dropped, per slave and
/// reason (its counters named by `compile::drop_counter`).
pub(super) fn program_drops(ns: &NetNs, table: &str) -> Vec<ProgramDrops> {
    match nft::query(ns, &["-j", "list", "counters", "table", "netdev", table]) {
        Ok(json) => parse_drops(&json),
        Err(_) => vec![],
    }
}

fn parse_drops(json: &str) -> Vec<ProgramDrops> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return vec![];
    };
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let c = &item["counter"];
        if let (Some((why, id)), Some(n)) = (
            c["name"].as_str().and_then(compile::parse_drop_counter),
            c["packets"].as_u64(),
        ) {
            out.push((id, why, n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_read_from_the_named_counters() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
            {"counter":{"family":"netdev","name":"private_2","table":"ipvlan_rs_3","handle":4,"packets":7,"bytes":700}},
            {"counter":{"family":"netdev","name":"spoof_1","table":"ipvlan_rs_3","handle":5,"packets":1,"bytes":60}},
            {"counter":{"family":"netdev","name":"source_guard_1","table":"ipvlan_rs_3","handle":6,"packets":0,"bytes":0}},
            {"counter":{"family":"netdev","name":"chain_1","table":"ipvlan_rs_3","handle":7,"packets":9,"bytes":9}}]}"#;
        assert_eq!(
            parse_drops(json),
            vec![
                (SlaveId(2), DropReason::Private, 7),
                (SlaveId(1), DropReason::Spoof, 1),
                (SlaveId(1), DropReason::SourceGuard, 0),
            ]
        );
        assert!(parse_drops("not json").is_empty());
    }
}

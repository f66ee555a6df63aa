//! L3S plumbing in the master's namespace: policy routing, the NFQUEUE rules, the queue.
//!
//! Only where the daemon carries L3S: the user backend, or the kernel backend with the
//! fast path off (`--fast-path off`: the driver's exact hooks). With the fast path the
//! kernel routes L3S through the master namespace's stack and the port's datapath sets
//! that up (`ipvlan_datapath::kernel::l3s`).

use std::sync::Arc;

use ipvlan_core::Mode;
use ipvlan_datapath::guard;
use ipvlan_sys::nfqueue::NfQueue;
use ipvlan_sys::rtnl::{Link, Rtnl, RtnlError};
use ipvlan_sys::{NsKey, nft};

use super::portmap::PortKey;
use super::{Daemon, Error, L3S_QUEUE_BASE, L3s};

impl Daemon {
    /// Sets up or removes the L3S plumbing so that it matches the port's mode.
    pub(super) fn sync_l3s(&mut self, k: PortKey) -> Result<(), Error> {
        let want = self.ports[k].port.mode() == Mode::L3s && !self.ports[k].datapath.routes_l3s();
        match (want, self.ports[k].l3s.is_some()) {
            (true, false) => self.enter_l3s(k),
            (false, true) => {
                self.leave_l3s(k);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(super) fn enter_l3s(&mut self, k: PortKey) -> Result<(), Error> {
        let used: Vec<u16> = self
            .ports
            .iter()
            .filter_map(|(_, p)| p.l3s.as_ref().map(|l| l.num))
            .collect();
        let num = (L3S_QUEUE_BASE..L3S_QUEUE_BASE + 4096)
            .find(|n| !used.contains(n))
            .ok_or(Error::NoL3sQueue)?;
        let key = k.ns;
        let w = self
            .watched
            .get_mut(&key)
            .expect("port namespace is watched");
        let mark = guard::l3s_mark(num);
        let exists = |r: Result<(), RtnlError>| match r {
            Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST as i32) => Ok(()),
            r => r,
        };
        let lo = w.rtnl.link_by_name("lo")?.ok_or(Error::NoLoopback)?;
        let setup = (|| -> Result<NfQueue, Error> {
            for v6 in [false, true] {
                exists(
                    w.rtnl
                        .fwmark_rule(true, v6, mark, guard::L3S_TABLE, guard::L3S_RULE_PREF),
                )?;
            }
            // A route through `lo` needs it up: else it comes with `lo` (`on_loopback`).
            if lo.is_up() {
                add_local_routes(&mut w.rtnl, lo.index)?;
            }
            let rule = guard::l3s_queue_rules(num);
            let (table, rest) = rule.split_at(2);
            for prog in ["iptables", "ip6tables"] {
                // A previous daemon's rule for this queue, if it left one.
                let mut del: Vec<&str> = table.iter().map(String::as_str).collect();
                del.push("-D");
                del.extend(rest.iter().map(String::as_str));
                while nft::xtables(&w.ns, prog, &del).is_ok() {}
                let mut args: Vec<&str> = table.iter().map(String::as_str).collect();
                args.push("-A");
                args.extend(rest.iter().map(String::as_str));
                nft::xtables(&w.ns, prog, &args).map_err(Error::NoNfqueue)?;
            }
            Ok(w.ns.run(|| NfQueue::open(num))??)
        })();
        match setup {
            Ok(q) => {
                self.ports[k].l3s = Some(L3s {
                    num,
                    queue: Arc::new(q),
                });
                Ok(())
            }
            Err(e) => {
                self.remove_l3s_plumbing(key, num);
                Err(e)
            }
        }
    }

    /// A link event for `lo` in the master namespace `key`: once up, its L3S ports get
    /// the local routes that needed it (the kernel removes them when it goes down).
    pub(super) fn on_loopback(&mut self, key: NsKey, lo: &Link) {
        if !lo.is_up()
            || !self
                .ports
                .iter()
                .any(|(k, p)| k.ns == key && p.l3s.is_some())
        {
            return;
        }
        if let Some(w) = self.watched.get_mut(&key)
            && let Err(e) = add_local_routes(&mut w.rtnl, lo.index)
        {
            tracing::warn!("L3S local routes in {key}: {e}");
        }
    }

    pub(super) fn leave_l3s(&mut self, k: PortKey) {
        self.ports[k].datapath.forget_l3s_table();
        if let Some(l) = self.ports[k].l3s.take() {
            let key = k.ns;
            let table = guard::l3s_table_name(k.master_index);
            if let Some(w) = self.watched.get(&key) {
                let _ = nft::apply(
                    &w.ns,
                    &format!("table inet {table} {{}}\ndelete table inet {table}\n"),
                );
            }
            self.remove_l3s_plumbing(key, l.num);
        }
    }

    /// Removes the rules of queue `num`; the shared local route goes with the last one.
    pub(super) fn remove_l3s_plumbing(&mut self, key: NsKey, num: u16) {
        let others = self
            .ports
            .iter()
            .any(|(k, p)| k.ns == key && p.l3s.as_ref().is_some_and(|l| l.num != num));
        let Some(w) = self.watched.get_mut(&key) else {
            return;
        };
        let rule = guard::l3s_queue_rules(num);
        let (table, rest) = rule.split_at(2);
        for prog in ["iptables", "ip6tables"] {
            let mut args: Vec<&str> = table.iter().map(String::as_str).collect();
            args.push("-D");
            args.extend(rest.iter().map(String::as_str));
            let _ = nft::xtables(&w.ns, prog, &args);
        }
        for v6 in [false, true] {
            let _ = w.rtnl.fwmark_rule(
                false,
                v6,
                guard::l3s_mark(num),
                guard::L3S_TABLE,
                guard::L3S_RULE_PREF,
            );
            if !others && let Ok(Some(lo)) = w.rtnl.link_by_name("lo") {
                let _ = w
                    .rtnl
                    .local_default_route(false, v6, guard::L3S_TABLE, lo.index);
            }
        }
    }
}

/// The L3S table's local default routes through `lo` (shared by the namespace's L3S
/// ports; present already is fine).
fn add_local_routes(rtnl: &mut Rtnl, lo: u32) -> Result<(), RtnlError> {
    for v6 in [false, true] {
        match rtnl.local_default_route(true, v6, guard::L3S_TABLE, lo) {
            Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST as i32) => {}
            r => r?,
        }
    }
    Ok(())
}

//! The kernel IPvlan HOWTO's walkthrough (Documentation/networking/ipvlan.rst, section
//! 5), command for command, in L2 bridge mode — with `ipvlan` in place of `ip` where the
//! device is created. Root only: runs in fresh network namespaces (see `common`).
//!
//! ```text
//!   ns0: ipvl0 10.X.0.10 fd00:X::10      ns1: ipvl1 10.X.0.11 fd00:X::11
//!              \                                 /
//!               +------ HOST: eth0 (master) ----+
//!                              | veth
//!                       ROUTER: eth0 10.X.0.1 fd00:X::1
//! ```

#![forbid(unsafe_code)]

mod common;

use common::*;
use serde_json::Value;

/// Steps (d)(2)-(6) of the HOWTO inside slave namespace `ns` for device `dev`, plus the
/// IPv6 address.
fn configure_slave(t: &Topo, ns: &str, dev: &str, host_part: u32) {
    ok(&format!("ip netns exec {ns} ip link set dev {dev} up"));
    ok(&format!("ip netns exec {ns} ip link set dev lo up"));
    // On a fresh namespace `lo` up already carries 127.0.0.1/8; plain `ip` then adds
    // 127.0.0.1/32 beside it and exits 0 (checked on Linux 6.18, iproute2 6.1), so the
    // HOWTO's step must simply succeed.
    ok(&format!(
        "ip netns exec {ns} ip -4 addr add 127.0.0.1 dev lo"
    ));
    ok(&format!(
        "ip netns exec {ns} ip -4 addr add {}/24 dev {dev}",
        t.v4(host_part)
    ));
    ok(&format!(
        "ip netns exec {ns} ip -4 route add default via {} dev {dev}",
        t.router_v4()
    ));
    ok(&format!(
        "ip netns exec {ns} ip -6 addr add {}/64 dev {dev}",
        t.v6(host_part)
    ));
}

fn promiscuity(ns: &str, dev: &str) -> i64 {
    link_json(ns, dev)["promiscuity"]
        .as_i64()
        .unwrap_or_else(|| panic!("no promiscuity field for {dev} in {ns}"))
}

/// The `ipvlan -j -d link show` entries, as an array.
fn show_json(t: &Topo, ns: &str) -> Vec<Value> {
    let out = t.ipvlan_ok(ns, &["-j", "-d", "link", "show"]);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`ipvlan -j -d link show` is not JSON ({e}): {out}"));
    v.as_array()
        .unwrap_or_else(|| panic!("`ipvlan -j -d link show` is not an array: {v}"))
        .clone()
}

fn entry<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|e| e["ifname"] == name)
        .unwrap_or_else(|| panic!("no {name} in `ipvlan -j -d link show`: {list:?}"))
}

#[test]
fn howto_walkthrough_l2_bridge() {
    require_root();
    let t = Topo::new(2);
    let (host, router) = (t.host.clone(), t.router.clone());
    let (ns0, ns1) = (t.ns(0).to_string(), t.ns(1).to_string());
    let master_mac = mac(&host, "eth0");
    assert_eq!(
        promiscuity(&host, "eth0"),
        0,
        "master promiscuous before any slave"
    );

    // (b) Create two ipvlan slaves on eth0: the HOWTO's form without `name`, and the
    // iproute2 form with it.
    t.ipvlan_ok(
        &host,
        &[
            "link", "add", "link", "eth0", "ipvl0", "type", "ipvlan", "mode", "l2",
        ],
    );
    t.ipvlan_ok(
        &host,
        &[
            "link", "add", "link", "eth0", "name", "ipvl1", "type", "ipvlan", "mode", "l2",
        ],
    );
    // The slaves appear in the master's namespace, carrying the master's MAC.
    assert_eq!(mac(&host, "ipvl0"), master_mac, "ipvl0 MAC");
    assert_eq!(mac(&host, "ipvl1"), master_mac, "ipvl1 MAC");

    // (c) Assign slaves to the respective network namespaces.
    ok(&format!("ip -n {host} link set dev ipvl0 netns {ns0}"));
    ok(&format!("ip -n {host} link set dev ipvl1 netns {ns1}"));
    assert!(!link_exists(&host, "ipvl0") && !link_exists(&host, "ipvl1"));

    // (d) Configure each slave inside its namespace.
    configure_slave(&t, &ns0, "ipvl0", 10);
    configure_slave(&t, &ns1, "ipvl1", 11);
    assert_eq!(mac(&ns0, "ipvl0"), master_mac, "ipvl0 MAC after the move");
    assert_eq!(mac(&ns1, "ipvl1"), master_mac, "ipvl1 MAC after the move");

    // IPv6 link-locals: unique, and none equal to the master's.
    let ll_master = link_local(&host, "eth0");
    let ll0 = link_local(&ns0, "ipvl0");
    let ll1 = link_local(&ns1, "ipvl1");
    assert_ne!(ll0, ll1, "the two slaves share a link-local address");
    assert_ne!(ll0, ll_master, "ipvl0 has the master's link-local address");
    assert_ne!(ll1, ll_master, "ipvl1 has the master's link-local address");

    // Slave <-> slave, IPv4 and IPv6 (global and link-local).
    t.assert_ping(&ns0, &t.v4(11));
    t.assert_ping(&ns1, &t.v4(10));
    t.assert_ping(&ns0, &t.v6(11));
    t.assert_ping(&ns1, &t.v6(10));
    t.assert_ping(&ns0, &format!("{ll1}%ipvl0"));
    t.assert_ping(&ns1, &format!("{ll0}%ipvl1"));

    // Slaves -> router (the outside), and router -> slaves.
    for ns in [&ns0, &ns1] {
        t.assert_ping(ns, &t.router_v4());
        t.assert_ping(ns, &t.router_v6());
    }
    for h in [10, 11] {
        t.assert_ping(&router, &t.v4(h));
        t.assert_ping(&router, &t.v6(h));
    }

    // Megabytes over TCP, intact.
    t.assert_tcp(&ns0, &ns1, &t.v4(11), 16);
    t.assert_tcp(&ns0, &router, &t.router_v4(), 16);
    t.assert_tcp(&router, &ns1, &t.v6(11), 8);

    // The router sees every slave address at the master's MAC.
    let neigh = json(&format!("ip -j -n {router} neigh show dev eth0"));
    let neigh = neigh.as_array().cloned().unwrap_or_default();
    for addr in [t.v4(10), t.v4(11), t.v6(10), t.v6(11)] {
        let e = neigh
            .iter()
            .find(|e| e["dst"] == addr.as_str())
            .unwrap_or_else(|| panic!("router has no neighbour entry for {addr}: {neigh:?}"));
        assert_eq!(
            e["lladdr"].as_str().map(str::to_ascii_lowercase).as_deref(),
            Some(master_mac.as_str()),
            "router's neighbour entry for {addr} is not at the master's MAC: {e}"
        );
    }

    // One MAC on the wire: the master never went promiscuous.
    assert_eq!(
        promiscuity(&host, "eth0"),
        0,
        "master eth0 is in promiscuous mode after traffic"
    );

    // `ipvlan -d link show` prints the kind line as `ip -d link show` does.
    let text = t.ipvlan_ok(&host, &["-d", "link", "show"]);
    assert!(
        text.contains("ipvlan  mode l2 bridge"),
        "`ipvlan -d link show` lacks `ipvlan  mode l2 bridge`:\n{text}"
    );
    assert!(text.contains("ipvl0") && text.contains("ipvl1"), "{text}");

    // `ipvlan -j -d link show`: the shape of `ip -j -d link show`.
    let list = show_json(&t, &host);
    for (name, ns) in [("ipvl0", &ns0), ("ipvl1", &ns1)] {
        let e = entry(&list, name);
        assert_eq!(
            e["address"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some(master_mac.as_str()),
            "{e}"
        );
        assert_eq!(e["mtu"], 1500, "{e}");
        let flags: Vec<&str> = e["flags"]
            .as_array()
            .unwrap_or_else(|| panic!("flags not an array: {e}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(flags.contains(&"UP"), "{name} not UP: {e}");
        assert!(
            matches!(e["operstate"].as_str(), Some("UP") | Some("UNKNOWN")),
            "{name} operstate: {e}"
        );
        assert_eq!(e["linkinfo"]["info_kind"], "ipvlan", "{e}");
        assert_eq!(e["linkinfo"]["info_data"]["mode"], "l2", "{e}");
        assert_eq!(e["linkinfo"]["info_data"]["bridge"], true, "{e}");
        assert_eq!(e["netns"], ns.as_str(), "{e}");
        assert_eq!(e["link"], "eth0", "{e}");
    }

    // Delete a slave from where it lives: it is gone.
    t.ipvlan_ok(&ns0, &["link", "del", "dev", "ipvl0"]);
    assert!(
        !link_exists(&ns0, "ipvl0"),
        "ipvl0 still in {ns0} after del"
    );
    let list = show_json(&t, &host);
    assert!(
        !list.iter().any(|e| e["ifname"] == "ipvl0"),
        "ipvl0 still listed after del: {list:?}"
    );
    // The other slave is unaffected.
    t.assert_ping(&ns1, &t.router_v4());
}

/// `link show` for slaves that have not been moved or configured yet, the two `add`
/// forms, and `del` leaving nothing behind in the master's namespace.
#[test]
fn link_show_and_del() {
    require_root();
    let t = Topo::new(1);
    let (host, ns0) = (t.host.clone(), t.ns(0).to_string());
    let before = link_names(&host);
    let master_mac = mac(&host, "eth0");

    t.ipvlan_ok(
        &host,
        &[
            "link", "add", "link", "eth0", "ipvl0", "type", "ipvlan", "mode", "l2", "bridge",
        ],
    );
    t.ipvlan_ok(
        &host,
        &[
            "link", "add", "link", "eth0", "name", "ipvl1", "type", "ipvlan", "mode", "l2",
        ],
    );
    ok(&format!("ip -n {host} link set dev ipvl0 netns {ns0}"));

    let text = t.ipvlan_ok(&host, &["-d", "link", "show"]);
    assert_eq!(
        text.matches("ipvlan  mode l2 bridge").count(),
        2,
        "expected two `ipvlan  mode l2 bridge` lines:\n{text}"
    );

    let list = show_json(&t, &host);
    assert_eq!(list.len(), 2, "{list:?}");
    let e0 = entry(&list, "ipvl0");
    assert_eq!(e0["netns"], ns0.as_str(), "{e0}");
    let e1 = entry(&list, "ipvl1");
    assert_eq!(e1["netns"], host.as_str(), "{e1}");
    for e in [e0, e1] {
        assert_eq!(e["link"], "eth0", "{e}");
        assert_eq!(e["linkinfo"]["info_kind"], "ipvlan", "{e}");
        assert_eq!(e["linkinfo"]["info_data"]["mode"], "l2", "{e}");
        assert_eq!(e["linkinfo"]["info_data"]["bridge"], true, "{e}");
        assert_eq!(
            e["address"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some(master_mac.as_str()),
            "{e}"
        );
        assert!(e["mtu"].is_u64(), "{e}");
        assert!(e["flags"].is_array(), "{e}");
        assert!(e["operstate"].is_string(), "{e}");
    }

    // `show dev NAME` in the slave's own namespace shows just that one.
    let one = t.ipvlan_ok(&ns0, &["-j", "-d", "link", "show", "dev", "ipvl0"]);
    let one: Value = serde_json::from_str(&one).expect("JSON");
    let one = one.as_array().expect("array");
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0]["ifname"], "ipvl0");

    // `del` (both spellings) from where each slave lives.
    t.ipvlan_ok(&ns0, &["link", "del", "dev", "ipvl0"]);
    t.ipvlan_ok(&host, &["link", "delete", "ipvl1"]);
    assert!(!link_exists(&ns0, "ipvl0"));
    assert!(!link_exists(&host, "ipvl1"));
    assert_eq!(show_json(&t, &host), Vec::<Value>::new());
    // Nothing is left in the master's namespace (no host ends, no half-made devices).
    assert_eq!(link_names(&host), before, "devices left behind in HOST");
    assert_eq!(
        link_names(&ns0),
        ["lo".to_string()].into(),
        "devices left in ns0"
    );
}

/// `mtu N` (placed as iproute2 places generic link options, before `type`).
#[test]
fn link_add_with_mtu() {
    require_root();
    let t = Topo::new(0);
    let host = t.host.clone();
    t.ipvlan_ok(
        &host,
        &[
            "link", "add", "link", "eth0", "name", "ipvl0", "mtu", "1400", "type", "ipvlan",
            "mode", "l2",
        ],
    );
    assert_eq!(link_json(&host, "ipvl0")["mtu"], 1400);
}

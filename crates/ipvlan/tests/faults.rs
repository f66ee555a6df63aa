//! Faults and hostile slaves: what happens behind the daemon's back (namespaces, slaves
//! and host ends deleted, host ends tampered with, the nft table deleted or edited),
//! frames a slave forges, malformed and oversized frames from a slave or the wire, and
//! full socket buffers (a slave that never reads, a broadcast flood). Root only: fresh
//! namespaces (see `common`).

#![forbid(unsafe_code)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use ipvlan_sys::packet::PacketSocket;
use serde_json::Value;

/// Two L2 slaves, ipvl0 in ns0 and ipvl1 in ns1, with 10.X.0.10 and .11.
fn two_slaves(t: &Topo) {
    for i in 0..2 {
        let dev = add_slave(t, i, &["mode", "l2"]);
        ok(&format!(
            "ip -n {} addr add {}/24 dev {dev}",
            t.ns(i),
            t.v4(10 + u32::try_from(i).unwrap())
        ));
    }
    t.assert_ping(t.ns(0), &t.router_v4());
}

fn listed(t: &Topo) -> Vec<String> {
    let out = t.ipvlan_ok(&t.host, &["-j", "link", "show"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["ifname"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_deleted_slave_namespace_frees_its_slave_and_addresses() {
    require_root();
    let t = Topo::new(2);
    two_slaves(&t);
    ok(&format!("ip netns del {}", t.ns(0)));
    assert!(
        eventually(Duration::from_secs(5), || !listed(&t)
            .contains(&"ipvl0".to_string())),
        "ipvl0 still listed after its namespace was deleted: {:?}",
        listed(&t)
    );
    // Its address is free: the other slave may take it, and the router reaches it.
    ok(&format!(
        "ip -n {} addr add {}/24 dev ipvl1",
        t.ns(1),
        t.v4(10)
    ));
    std::thread::sleep(Duration::from_millis(500));
    t.assert_ping(&t.router, &t.v4(10));
}

#[test]
fn slaves_deleted_behind_the_daemons_back_are_forgotten() {
    require_root();
    let t = Topo::new(2);
    two_slaves(&t);
    // The slave end, from inside its namespace.
    ok(&format!("ip -n {} link del ipvl0", t.ns(0)));
    // The host end, beside the master (it carries the slave with it).
    let host_end = host_end(&t, "ipvl1");
    ok(&format!("ip -n {} link del {host_end}", t.host));
    assert!(
        eventually(Duration::from_secs(5), || listed(&t).is_empty()),
        "slaves still listed: {:?}",
        listed(&t)
    );
    assert!(
        !link_exists(t.ns(1), "ipvl1"),
        "deleting the host end left the slave"
    );
    // The port is gone too: a new slave starts a fresh one and works.
    let dev = add_slave(&t, 1, &["mode", "l2"]);
    ok(&format!(
        "ip -n {} addr add {}/24 dev {dev}",
        t.ns(1),
        t.v4(11)
    ));
    t.assert_ping(t.ns(1), &t.router_v4());
}

/// An Ethernet+IPv4+UDP frame (virtio-net header first) from `src` to the router.
fn frame(src: [u8; 6], dst: [u8; 6], from: [u8; 4], to: [u8; 4], marker: &[u8]) -> Vec<u8> {
    let mut udp = vec![0x30, 0x39, 0x30, 0x39];
    udp.extend_from_slice(&u16::try_from(8 + marker.len()).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(marker);
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&u16::try_from(20 + udp.len()).unwrap().to_be_bytes());
    ip.extend_from_slice(&from);
    ip.extend_from_slice(&to);
    let sum = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = !u16::try_from((sum & 0xffff) + (sum >> 16)).expect("one fold suffices");
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut f = vec![0u8; 10];
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

/// Sends each frame (virtio-net header first) on `dev` in `ns` from a packet socket;
/// what the kernel said to each. Paced (a pause every 8 frames) so that the switch's
/// bounded receive queues (32 frames on a host end with the user backend) never
/// overflow: what is counted is the frames' fault, not the queue's.
fn send_frames(ns: &str, dev: &str, frames: Vec<Vec<u8>>) -> Vec<Result<usize, String>> {
    let index = ifindex(ns, dev);
    let what = format!("a packet socket on {dev} in {ns}");
    in_netns(ns, move || {
        let sock = PacketSocket::open(index).unwrap_or_else(|e| panic!("{what}: {e}"));
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if i % 8 == 7 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                sock.send(f).map_err(|e| e.to_string())
            })
            .collect()
    })
}

/// `frames`, `n` times over.
fn repeat(frames: &[Vec<u8>], n: usize) -> Vec<Vec<u8>> {
    (0..n).flat_map(|_| frames.iter().cloned()).collect()
}

fn ifindex(ns: &str, dev: &str) -> u32 {
    link_json(ns, dev)["ifindex"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ifindex for {dev} in {ns}"))
        .try_into()
        .expect("an ifindex is a u32")
}

#[test]
fn frames_with_a_forged_source_mac_never_leave_the_master() {
    require_root();
    let t = Topo::new(2);
    two_slaves(&t);
    let (master, router) = wire_macs(&t);
    let x = u8::try_from(t.x).expect("x is an address octet");
    let (from, to) = ([10, x, 0, 10], [10, x, 0, 1]);
    let forged = frame(
        [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01],
        router,
        from,
        to,
        b"forged-mac",
    );
    let honest = frame(master, router, from, to, b"honest-mac");

    // Listen on the router's side of the wire.
    let rx_index = ifindex(&t.router, "eth0");
    let router_ns = t.router.clone();
    let listener = std::thread::spawn(move || {
        in_netns(&router_ns, move || {
            let sock = PacketSocket::open(rx_index).expect("packet socket on the router");
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 70000];
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                match sock.recv(&mut buf) {
                    Ok(n) => seen.push(buf[..n].to_vec()),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            seen
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let sent = send_frames(t.ns(0), "ipvl0", repeat(&[forged, honest], 5));
    assert!(sent.iter().all(Result::is_ok), "sending failed: {sent:?}");
    let seen = listener.join().expect("listener");
    let has = |m: &[u8]| seen.iter().any(|f| f.windows(m.len()).any(|w| w == m));
    assert!(
        has(b"honest-mac"),
        "the honest frames did not reach the router either"
    );
    assert!(
        !has(b"forged-mac"),
        "a frame with a forged source MAC left the master"
    );

    let out = t.ipvlan_ok(t.ns(0), &["-j", "-s", "link", "show", "dev", "ipvl0"]);
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let spoof = v[0]["stats64"]["drops"]["spoof"].as_u64().unwrap_or(0);
    assert!(spoof >= 5, "forged frames not counted as spoof: {v}");
}

#[test]
fn a_table_deleted_by_hand_is_restored() {
    require_root();
    let t = Topo::new(2);
    two_slaves(&t);
    let table = our_table(&t);
    ok(&format!(
        "ip netns exec {} nft delete table netdev {table}",
        t.host
    ));
    let back = eventually(Duration::from_secs(6), || {
        ok(&format!("ip netns exec {} nft list tables", t.host))
            .lines()
            .any(|l| l.trim() == format!("table netdev {table}"))
    });
    assert!(back, "the table {table} was not restored");
    t.assert_ping(&t.router, &t.v4(10));
    t.assert_ping(t.ns(0), &t.v4(11));
    assert!(
        t.daemon().log_text().contains("restoring it"),
        "no restoration in the log"
    );
}

/// The name of the port's table in HOST (`ipvlan_rs_<master ifindex>`).
fn our_table(t: &Topo) -> String {
    let tables = ok(&format!("ip netns exec {} nft list tables", t.host));
    tables
        .lines()
        .find_map(|l| {
            l.strip_prefix("table netdev ")
                .filter(|n| n.starts_with("ipvlan_rs_"))
        })
        .unwrap_or_else(|| panic!("no ipvlan-rs table in HOST: {tables}"))
        .trim()
        .to_string()
}

/// One chain of a table as `nft -a list table` shows it.
struct Chain {
    name: String,
    device: String,
    /// (rule, handle)
    rules: Vec<(String, u64)>,
}

fn chains(t: &Topo, table: &str) -> Vec<Chain> {
    let out = ok(&format!(
        "ip netns exec {} nft -a list table netdev {table}",
        t.host
    ));
    let mut v: Vec<Chain> = Vec::new();
    for l in out.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("chain ") {
            v.push(Chain {
                name: rest.split_whitespace().next().unwrap_or("").to_string(),
                device: String::new(),
                rules: Vec::new(),
            });
        } else if let Some(c) = v.last_mut() {
            if let Some(i) = l.find("device \"") {
                c.device = l[i + 8..].split('"').next().unwrap_or("").to_string();
            } else if let Some((rule, h)) = l.rsplit_once(" # handle ")
                && !rule.starts_with("type ")
            {
                c.rules
                    .push((rule.to_string(), h.parse().expect("a handle")));
            }
        }
    }
    v
}

/// The table as a sorted list of lines without counter values or handles, set elements
/// sorted: equal for equal tables, whatever order they were built in.
fn canonical(t: &Topo, table: &str) -> Vec<String> {
    let out = ok(&format!(
        "ip netns exec {} nft list table netdev {table}",
        t.host
    ));
    let mut lines: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("packets "))
        .map(|l| {
            let l = match l.find("counter packets ") {
                Some(i) => {
                    let rest = l[i..].splitn(6, ' ').nth(5).unwrap_or("");
                    format!("{}counter {rest}", &l[..i])
                }
                None => l.to_string(),
            };
            match l.strip_prefix("elements = {") {
                Some(e) => {
                    let mut e: Vec<&str> =
                        e.trim_end_matches('}').split(',').map(str::trim).collect();
                    e.sort();
                    format!("elements = {{ {} }}", e.join(", "))
                }
                None => l,
            }
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_table_edited_by_hand_is_restored() {
    require_root();
    let t = Topo::new(2);
    two_slaves(&t);
    let table = our_table(&t);
    let original = canonical(&t, &table);
    let cs = chains(&t, &table);
    let master_chain = cs
        .iter()
        .find(|c| c.device == "eth0")
        .unwrap_or_else(|| panic!("no chain on the master's ingress in {table}"));
    let host_chain = cs
        .iter()
        .find(|c| c.device.starts_with("ivh"))
        .unwrap_or_else(|| panic!("no chain on a host end in {table}"));
    // A host end's chain where it has rules (kernel backend), else the master's (the
    // user backend's guard drops by the host end chains' policy).
    let rule_chain = if host_chain.rules.is_empty() {
        master_chain
    } else {
        host_chain
    };
    let slave0 = t.v4(10);
    let holders: Vec<String> = json(&format!(
        "ip netns exec {} nft -j list table netdev {table}",
        t.host
    ))["nftables"]
        .as_array()
        .expect("an nftables array")
        .iter()
        .filter_map(|o| o.get("set").or_else(|| o.get("map")))
        .filter(|s| s["elem"].to_string().contains(&format!("\"{slave0}\"")))
        .map(|s| s["name"].as_str().expect("a name").to_string())
        .collect();
    assert!(
        !holders.is_empty(),
        "{slave0} is in no set or map of {table}"
    );

    let edits: Vec<(&str, String)> = vec![
        (
            "a rule added",
            format!(
                "insert rule netdev {table} {} drop comment \"ivt-tamper\"",
                master_chain.name
            ),
        ),
        (
            "a rule deleted",
            format!(
                "delete rule netdev {table} {} handle {}",
                rule_chain.name,
                rule_chain.rules.first().expect("a chain with rules").1
            ),
        ),
        (
            "an element removed",
            holders
                .iter()
                .map(|s| format!("delete element netdev {table} {s} {{ {slave0} }}; "))
                .collect(),
        ),
        (
            "a chain flushed",
            format!("flush chain netdev {table} {}", master_chain.name),
        ),
        (
            "a chain deleted",
            format!(
                "flush chain netdev {table} {c}; delete chain netdev {table} {c}",
                c = host_chain.name
            ),
        ),
    ];
    // Let the daemon's check take its reference listing first: the first edit is then
    // compared with it; the later ones come within a check of the last restoration
    // (the other path: re-applied, then found to differ).
    std::thread::sleep(Duration::from_millis(2500));
    for (n, (what, cmd)) in edits.iter().enumerate() {
        ok(&format!("ip netns exec {} nft '{cmd}'", t.host));
        let back = eventually(Duration::from_secs(8), || canonical(&t, &table) == original);
        assert!(
            back,
            "{what} (`nft {cmd}`): the table was not restored\nnow: {:#?}\nwas: {original:#?}",
            canonical(&t, &table)
        );
        // The log also proves the edit was seen (the table may be back before the
        // first listing above could show the edit). It may come just after the
        // restoration: the daemon may only know it was an edit once it re-applied.
        let logged = || {
            t.daemon()
                .log_text()
                .matches("changed from outside")
                .count()
        };
        eventually(Duration::from_secs(2), || logged() > n);
        assert_eq!(
            logged(),
            n + 1,
            "{what}: restorations logged so far (\"changed from outside\")"
        );
        t.assert_ping(&t.router, &slave0);
        t.assert_ping(t.ns(0), &t.v4(11));
    }
}

#[test]
fn a_host_end_tampered_with_is_repaired() {
    require_root();
    let t = Topo::new(2);
    two_slaves(&t);
    let he = host_end(&t, "ipvl0");
    let h = t.host.clone();
    let bridge = format!("{}-br", t.prefix);
    ok(&format!("ip -n {h} link add {bridge} type bridge"));
    ok(&format!("ip -n {h} link set dev {bridge} up"));
    let link = || link_json(&h, &he);
    let up = |l: &Value| {
        l["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP"))
    };
    type Case<'a> = (&'a str, String, Box<dyn Fn() -> bool + 'a>);
    let cases: Vec<Case> = vec![
        (
            "set down",
            format!("link set dev {he} down"),
            Box::new(|| up(&link())),
        ),
        (
            "MTU lowered",
            format!("link set dev {he} mtu 1280"),
            Box::new(|| link()["mtu"] == 65535),
        ),
        (
            "alias cleared",
            format!("link set dev {he} alias \"\""),
            Box::new(|| {
                link()["ifalias"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("ipvlan-rs:"))
            }),
        ),
        (
            "ARP turned on",
            format!("link set dev {he} arp on"),
            Box::new(|| {
                link()["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "NOARP"))
            }),
        ),
        (
            "made a bridge port",
            format!("link set dev {he} master {bridge}"),
            Box::new(|| link().get("master").is_none() && up(&link())),
        ),
        (
            "given an address",
            format!("addr add {}/32 dev {he}", t.v4(250)),
            Box::new(|| addrs(&h, &he, "-4", "global").is_empty()),
        ),
    ];
    let repairs = || {
        let log = t.daemon().log_text();
        log.matches("from outside (").count() + log.matches("from outside; removed it").count()
    };
    for (n, (what, cmd, repaired)) in cases.iter().enumerate() {
        ok(&format!("ip -n {h} {cmd}"));
        assert!(
            eventually(Duration::from_secs(5), repaired),
            "host end {he} {what} (`ip {cmd}`): not repaired\n{}",
            t.diag()
        );
        assert!(
            eventually(Duration::from_secs(2), || repairs() > n),
            "host end {he} {what}: no repair logged"
        );
        t.assert_ping(&t.router, &t.v4(10));
        t.assert_ping(t.ns(0), &t.v4(11));
        // Frames as large as the slave's MTU pass again (an MTU left at 1280 would
        // drop them on the host end).
        let big = sh(&format!(
            "ip netns exec {} ping -c 2 -W 2 -i 0.2 -M do -s 1472 {}",
            t.ns(0),
            t.router_v4()
        ));
        assert!(big.status.success(), "{what}: full-size frames do not pass");
    }
}

/// Malformed variants of a good IPv4 frame `good` (virtio-net header first), each with
/// what is wrong with it and the drop counter an L3 port counts it under (L3 refuses
/// what is not IP before it parses anything).
fn malformed(good: &[u8]) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    const IP: usize = 10 + 14;
    const M: &str = "malformed";
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.to_vec();
        f(&mut v);
        v
    };
    vec![
        ("an Ethernet header alone", M, good[..IP].to_vec()),
        ("a truncated IPv4 header", M, good[..IP + 12].to_vec()),
        ("IPv4 with IHL 4", M, with(&|v| v[IP] = 0x44)),
        ("IPv4 with version 6", M, with(&|v| v[IP] = 0x65)),
        (
            "IPv4 longer than the frame",
            M,
            with(&|v| v[IP + 2..IP + 4].copy_from_slice(&1400u16.to_be_bytes())),
        ),
        (
            "a truncated IPv6 header",
            M,
            with(&|v| {
                v[IP - 2..IP].copy_from_slice(&[0x86, 0xdd]);
                v[IP] = 0x60;
                v.truncate(IP + 20);
            }),
        ),
        (
            "a truncated ARP packet",
            "l3_filtered",
            with(&|v| {
                v[IP - 2..IP].copy_from_slice(&[0x08, 0x06]);
                v.truncate(IP + 10);
            }),
        ),
    ]
}

/// A frame claiming to be a TCP super-frame (GSO) that is none: a UDP packet, the
/// segment size absurd, the checksum offsets pointing past the end.
fn bogus_gso(good: &[u8]) -> Vec<u8> {
    let mut v = good.to_vec();
    v[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    v[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
    v[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len
    v[4..6].copy_from_slice(&1u16.to_le_bytes()); // gso_size
    v[6..8].copy_from_slice(&4000u16.to_le_bytes()); // csum_start
    v[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset
    v.resize(3000, 0x5a);
    v
}

#[test]
fn malformed_and_oversized_frames_are_dropped_and_counted() {
    require_root();
    let t = Topo::new(2);
    two_slaves(&t);
    let (master, router) = wire_macs(&t);
    let x = u8::try_from(t.x).expect("x is an address octet");
    let (slave0, slave1, ext) = ([10, x, 0, 10], [10, x, 0, 11], [10, x, 0, 1]);

    // From a slave. In L3 every unicast it sends is parsed for routing, so a header
    // that does not parse is counted `malformed` (in L2 such a frame to another MAC
    // is switched as it is, as a switch would).
    t.ipvlan_ok(
        t.ns(0),
        &[
            "link", "set", "dev", "ipvl0", "type", "ipvlan", "mode", "l3",
        ],
    );
    let is_l3 =
        || links_by_name(&t, &t.host, &["-d"])["ipvl0"]["linkinfo"]["info_data"]["mode"] == "l3";
    assert!(
        eventually(Duration::from_secs(5), is_l3),
        "the port is not in l3"
    );
    let good = frame(master, master, slave0, slave1, b"to-slave1");
    let bad = malformed(&good);
    let counters = ["malformed", "l3_filtered"];
    let before = counters.map(|c| drops(&t, "ipvl0", c));
    let mut frames: Vec<Vec<u8>> = bad.iter().map(|(_, _, f)| f.clone()).collect();
    frames.push(bogus_gso(&good));
    frames.push(vec![0x5a; 10 + 9000]); // larger than the slave's MTU
    let sent = send_frames(t.ns(0), "ipvl0", repeat(&frames, 20));
    let accepted = |range: std::ops::Range<usize>| {
        sent.iter()
            .enumerate()
            .filter(|(i, r)| range.contains(&(i % frames.len())) && r.is_ok())
            .count() as u64
    };
    eprintln!(
        "from the slave: {} malformed frames accepted by the kernel, bogus GSO {}, oversized {} (of 20 each); errors: {:?}",
        accepted(0..bad.len()),
        accepted(bad.len()..bad.len() + 1),
        accepted(bad.len() + 1..bad.len() + 2),
        sent.iter()
            .filter_map(|r| r.as_ref().err())
            .collect::<std::collections::BTreeSet<_>>()
    );
    for (i, counter) in counters.iter().enumerate() {
        let sent: u64 = (0..bad.len())
            .filter(|&k| bad[k].1 == *counter)
            .map(|k| accepted(k..k + 1))
            .sum();
        let what: Vec<&str> = bad
            .iter()
            .filter(|b| b.1 == *counter)
            .map(|b| b.0)
            .collect();
        assert_eq!(
            sent,
            20 * what.len() as u64,
            "the kernel refused frames: {sent:?}"
        );
        let counted = || drops(&t, "ipvl0", counter) - before[i];
        assert!(
            eventually(Duration::from_secs(5), || counted() >= sent),
            "{sent} frames sent by ipvl0 ({what:?}), {} counted `{counter}`\n{}",
            counted(),
            t.diag()
        );
    }
    // A slave still reaches another.
    t.assert_ping(t.ns(0), &t.v4(11));

    // From the wire, in L2: to the master's MAC and broadcast; and a frame larger
    // than the master's MTU. None of them can be blamed on a slave.
    t.ipvlan_ok(
        t.ns(0),
        &[
            "link", "set", "dev", "ipvl0", "type", "ipvlan", "mode", "l2",
        ],
    );
    assert!(
        eventually(Duration::from_secs(5), || !is_l3()),
        "the port is not back in l2"
    );
    ok(&format!("ip -n {} link set dev eth0 mtu 9000", t.router));
    let good = frame(router, master, ext, slave0, b"to-slave0");
    let mut frames: Vec<Vec<u8>> = malformed(&good).into_iter().map(|(_, _, f)| f).collect();
    let broadcast: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f[10..16].copy_from_slice(&[0xff; 6]);
            f
        })
        .collect();
    frames.extend(broadcast);
    frames.push(bogus_gso(&good));
    let mut big = good.clone();
    big.resize(10 + 9000, 0x5a);
    frames.push(big);
    let sent = send_frames(&t.router, "eth0", repeat(&frames, 20));
    let refused: Vec<(usize, &String)> = sent
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i % frames.len(), e)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    eprintln!(
        "from the wire: {} of {} frames accepted by the kernel; refused (kind, error): {refused:?}",
        sent.iter().filter(|r| r.is_ok()).count(),
        sent.len()
    );

    // The daemon is alive and answers, every slave is still there, good traffic flows.
    let listed = links_by_name(&t, &t.host, &["-s"]);
    assert!(
        listed.contains_key("ipvl0") && listed.contains_key("ipvl1"),
        "slaves lost: {listed:?}"
    );
    t.assert_ping(&t.router, &t.v4(10));
    t.assert_ping(t.ns(0), &t.v4(11));
    t.assert_tcp(t.ns(1), t.ns(0), &t.v4(10), 4);
    // The text form shows the same counter.
    let text = t.ipvlan_ok(t.ns(0), &["-s", "link", "show", "dev", "ipvl0"]);
    assert!(
        text.contains("dropped malformed: "),
        "`ipvlan -s link show` shows no malformed drops:\n{text}"
    );
}

/// Replies a `ping -c COUNT -i 0.1 -W 1` from `ns` to `addr` got.
fn ping_replies(ns: &str, addr: &str, count: u32) -> u32 {
    let out = stdout(&sh(&format!(
        "ip netns exec {ns} ping -c {count} -i 0.1 -W 1 {addr}"
    )));
    out.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" packets transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

#[test]
fn a_slave_that_never_reads_does_not_hold_up_the_others() {
    require_root();
    let t = Topo::new(3);
    two_slaves(&t);
    let dev = add_slave(&t, 2, &["mode", "l2"]);
    ok(&format!(
        "ip -n {} addr add {}/24 dev {dev}",
        t.ns(2),
        t.v4(12)
    ));
    t.assert_ping(t.ns(2), &t.router_v4());
    // ns2 binds a UDP port with a small buffer and never reads it.
    let sink: std::net::SocketAddr = format!("{}:9999", t.v4(12)).parse().expect("an address");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, ns2) = (stop.clone(), t.ns(2).to_string());
    let deaf = spawn_in_netns(&ns2, move || {
        let sock = std::net::UdpSocket::bind(sink).expect("bind the deaf socket");
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(sock);
    });
    // ns0 fills it (and keeps sending) for 3 s, while ns1 talks to ns0 and the router.
    let (s0, ns0) = (stop.clone(), t.ns(0).to_string());
    let sender = spawn_in_netns(&ns0, move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind the sender");
        let payload = [0x42u8; 1200];
        let mut sent = 0u64;
        while !s0.load(std::sync::atomic::Ordering::Relaxed) {
            if sock.send_to(&payload, sink).is_ok() {
                sent += 1;
            }
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    let replies = ping_replies(t.ns(1), &t.router_v4(), 20);
    t.assert_tcp(t.ns(1), t.ns(0), &t.v4(10), 8);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().expect("the sender");
    deaf.join().expect("the deaf socket");
    let snmp = ok(&format!("ip netns exec {} cat /proc/net/snmp", t.ns(2)));
    eprintln!(
        "to the deaf socket: {sent} datagrams sent; ns1 -> router: {replies}/20 replies; ns2 Udp: {:?}",
        snmp.lines()
            .filter(|l| l.starts_with("Udp:"))
            .collect::<Vec<_>>()
    );
    assert!(sent > 1000, "the sender hardly sent ({sent})");
    assert!(
        replies >= 18,
        "ns1 lost pings to the router while ns2 did not read: {replies}/20"
    );
    // The daemon is healthy: it answers, and the deaf slave works once it reads.
    let listed = links_by_name(&t, &t.host, &["-s"]);
    assert_eq!(listed.len(), 3, "slaves listed: {:?}", listed.keys());
    t.assert_ping(t.ns(2), &t.v4(10));
}

#[test]
fn a_broadcast_flood_from_one_slave_does_not_starve_another() {
    require_root();
    let t = Topo::new(2);
    two_slaves(&t);
    let (master, _) = wire_macs(&t);
    // Broadcasts of a local experimental ethertype: every one is fanned out to ns1
    // and the wire by the switching thread, in both backends; stacks ignore them.
    let mut flood = vec![0u8; 10];
    flood.extend_from_slice(&[0xff; 6]);
    flood.extend_from_slice(&master);
    flood.extend_from_slice(&[0x88, 0xb5]);
    flood.resize(10 + 200, 0x5a);
    let index = ifindex(t.ns(0), "ipvl0");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s0 = stop.clone();
    let flooder = spawn_in_netns(t.ns(0), move || {
        let sock = PacketSocket::open(index).expect("a packet socket in ns0");
        let (mut sent, mut refused) = (0u64, 0u64);
        while !s0.load(std::sync::atomic::Ordering::Relaxed) {
            match sock.send(&flood) {
                Ok(_) => sent += 1,
                Err(_) => refused += 1,
            }
        }
        (sent, refused)
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = links_by_name(&t, &t.host, &["-s"]);
    // The victim resolves the router again and again (ARP goes through the same
    // fan-out path) and pings it.
    let (mut replies, mut asked) = (0, 0);
    for _ in 0..5 {
        ok(&format!("ip -n {} neigh flush all", t.ns(1)));
        replies += ping_replies(t.ns(1), &t.router_v4(), 10);
        asked += 10;
    }
    let after = links_by_name(&t, &t.host, &["-s"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, refused) = flooder.join().expect("the flooder");
    let rx = |m: &std::collections::HashMap<String, Value>| {
        m["ipvl1"]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0)
    };
    eprintln!(
        "flood: {sent} broadcasts sent ({refused} refused by the kernel); ipvl1 received {} frames meanwhile; victim: {replies}/{asked} ping replies",
        rx(&after) - rx(&before)
    );
    assert!(sent > 10_000, "the flood hardly flooded ({sent})");
    // Generous: the victim's first ping of a round waits for ARP through the flood.
    assert!(
        replies * 10 >= asked * 8,
        "the victim lost more than 20 % of its pings under the flood: {replies}/{asked}\n{}",
        t.diag()
    );
    let listed = links_by_name(&t, &t.host, &["-s"]);
    assert_eq!(listed.len(), 2, "slaves listed: {:?}", listed.keys());
    t.assert_ping(t.ns(1), &t.v4(10));
}

//! The source guard (`source_guard on|off`, an ipvlan-rs extension of the grammar): a
//! slave of a guarded port may send only ARP, IPv4 and IPv6 from its own addresses.
//! Frames are forged with a packet socket inside the slave's namespace, as a hostile
//! container would; a UDP listener on the router sees what left the master. Root only:
//! fresh namespaces (see `common`).

#![forbid(unsafe_code)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use etherparse::PacketBuilder;
use ipvlan_sys::packet::{PacketSocket, VNET_HDR_LEN};
use serde_json::Value;

const PORT: u16 = 40_404;

fn ipv4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().expect("IPv4").octets()
}

/// Sends, from slave `i` (its device `ipvl{i}`), one UDP datagram to the router's
/// listener from each source address, carrying `tag:SOURCE` as payload.
fn send_from(t: &Topo, i: usize, sources: &[String], tag: &str) {
    let (master, router) = wire_macs(t);
    let to = ipv4(&t.router_v4());
    let frames: Vec<Vec<u8>> = sources
        .iter()
        .map(|src| {
            let b = PacketBuilder::ethernet2(master, router)
                .ipv4(ipv4(src), to, 64)
                .udp(PORT, PORT);
            let mut f = vec![0u8; VNET_HDR_LEN];
            b.write(&mut f, format!("{tag}:{src}").as_bytes())
                .expect("frame");
            f
        })
        .collect();
    let dev = format!("ipvl{i}");
    let index = link_json(t.ns(i), &dev)["ifindex"]
        .as_u64()
        .expect("ifindex")
        .try_into()
        .expect("an ifindex is a u32");
    in_netns(t.ns(i), move || {
        let sock = PacketSocket::open(index).expect("packet socket in the slave's namespace");
        for _ in 0..3 {
            for f in &frames {
                sock.send(f).expect("send");
            }
        }
    });
}

fn shown(t: &Topo, ns: &str) -> Value {
    let out = t.ipvlan_ok(ns, &["-j", "-d", "-s", "link", "show", "dev", "ipvl0"]);
    serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))[0]
        .clone()
}

fn guard_drops(t: &Topo) -> u64 {
    drops(t, "ipvl0", "source_guard")
}

#[test]
fn a_guarded_slave_can_only_send_from_its_own_addresses() {
    require_root();
    let mut t = Topo::new(2);
    for i in 0..2 {
        let dev = add_slave(&t, i, &["mode", "l2", "private"]);
        ok(&format!(
            "ip -n {} addr add {}/24 dev {dev}",
            t.ns(i),
            t.v4(10 + u32::try_from(i).unwrap())
        ));
    }
    let listener = Listener::start(
        &t.router,
        SocketAddr::new(t.router_v4().parse().unwrap(), PORT),
        vec![],
    );
    let own = t.v4(10);
    let theirs = t.v4(11);
    let nobodys = t.v4(99);
    let sources = [own.clone(), theirs.clone(), nobodys.clone()];

    // Off (the default): a slave can claim any source, as with the kernel driver.
    assert!(ping_retry(t.ns(0), &t.router_v4()), "{}", t.diag());
    send_from(&t, 0, &sources, "off");
    assert!(
        eventually(Duration::from_secs(3), || listener.count("off:") == 3),
        "without the guard every datagram should leave: {:?}",
        listener.received()
    );

    // On, set from the slave's own namespace; the mode and flag stay as they were.
    t.ipvlan_ok(
        t.ns(0),
        &[
            "link",
            "set",
            "dev",
            "ipvl0",
            "type",
            "ipvlan",
            "source_guard",
            "on",
        ],
    );
    let v = shown(&t, t.ns(0));
    let data = &v["linkinfo"]["info_data"];
    assert_eq!(data["source_guard"], Value::Bool(true), "{v}");
    assert_eq!(data["mode"], "l2", "{v}");
    assert_eq!(data["private"], Value::Bool(true), "{v}");
    let text = t.ipvlan_ok(&t.host, &["-d", "link", "show"]);
    assert!(text.contains("mode l2 private source_guard on"), "{text}");

    // Honest traffic still flows, ARP and neighbour discovery included.
    ok(&format!("ip -n {} neigh flush all", t.ns(0)));
    assert!(
        ping_retry(t.ns(0), &t.router_v4()),
        "a guarded slave cannot reach the router from its own address\n{}",
        t.diag()
    );
    ok(&format!(
        "ip -n {} addr add {}/64 dev ipvl0 nodad",
        t.ns(0),
        t.v6(10)
    ));
    assert!(
        ping_retry(t.ns(0), &t.router_v6()),
        "a guarded slave cannot reach the router over IPv6\n{}",
        t.diag()
    );
    let before = guard_drops(&t);
    send_from(&t, 0, &sources, "on");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        eventually(Duration::from_secs(3), || listener
            .saw(&format!("on:{own}"))),
        "the slave's own datagrams did not leave: {:?}",
        listener.received()
    );
    for forged in [&theirs, &nobodys] {
        assert!(
            !listener.saw(&format!("on:{forged}")),
            "a datagram from {forged} left a guarded slave: {:?}",
            listener.received()
        );
    }
    // 3 copies of 2 forged sources, each counted.
    assert!(
        eventually(Duration::from_secs(3), || guard_drops(&t) >= before + 6),
        "forged datagrams not counted as source_guard: {}",
        shown(&t, t.ns(0))
    );

    // A new daemon takes the guard back with the slaves.
    t.daemon_mut().kill(nix::sys::signal::Signal::SIGKILL);
    t.daemon_mut().spawn();
    let guarded = |t: &Topo| {
        let out = t.ipvlan(t.ns(0), &["-j", "-d", "link", "show", "dev", "ipvl0"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .is_ok_and(|v| v[0]["linkinfo"]["info_data"]["source_guard"] == Value::Bool(true))
    };
    assert!(
        eventually(Duration::from_secs(3), || guarded(&t)),
        "the source guard was lost across a restart: {}",
        t.ipvlan_ok(&t.host, &["-d", "link", "show"])
    );
    send_from(&t, 0, &sources, "again");
    assert!(
        eventually(Duration::from_secs(3), || listener
            .saw(&format!("again:{own}"))),
        "after the restart the slave's own datagrams did not leave: {:?}",
        listener.received()
    );
    assert!(
        !listener.saw(&format!("again:{theirs}")),
        "after the restart a forged datagram left: {:?}",
        listener.received()
    );

    // Off again, set through the other slave (the guard is the port's): everything
    // leaves once more.
    t.ipvlan_ok(
        t.ns(1),
        &[
            "link",
            "set",
            "dev",
            "ipvl1",
            "type",
            "ipvlan",
            "source_guard",
            "off",
        ],
    );
    send_from(&t, 0, &sources, "off2");
    assert!(
        eventually(Duration::from_secs(3), || listener.count("off2:") == 3),
        "with the guard off again, datagrams are still dropped: {:?}",
        listener.received()
    );
}

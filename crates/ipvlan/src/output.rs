//! How `link show` prints: text like `ip [-d] [-s] link show`, or JSON in the shape of
//! `ip -j -d link show`.

use ipvlan_proto::SlaveView;
use serde_json::{Value, json};

/// The slave's MAC as `ip` prints it; empty when the slave was not found.
fn address(l: &SlaveView) -> String {
    l.address.map(|m| m.to_string()).unwrap_or_default()
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Style {
    pub details: bool,
    pub stats: bool,
}

pub fn text(links: &[SlaveView], style: Style) -> String {
    let mut s = String::new();
    for l in links {
        let netns = match (&l.netns, &l.netns_id) {
            (Some(n), _) => format!(" netns {n}"),
            (None, Some(id)) if l.netns != l.master_netns => format!(" netns {id}"),
            _ => String::new(),
        };
        s += &format!(
            "{}: {}@{}: <{}> mtu {} state {}{}\n    link/ether {} brd ff:ff:ff:ff:ff:ff\n",
            l.ifindex,
            l.ifname,
            l.master,
            l.flags
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(","),
            l.mtu,
            l.operstate,
            netns,
            address(l)
        );
        if style.details {
            s += &format!(
                "    ipvlan  mode {} {}{}{} dev_id {:#x} host-end {} backend {}{}\n",
                l.mode.as_str(),
                l.port_flags.as_str(),
                if l.source_guard {
                    " source_guard on"
                } else {
                    ""
                },
                if l.host_access { " host_access on" } else { "" },
                l.dev_id,
                l.host_end,
                l.backend,
                if l.fast_path { " fastpath bpf" } else { "" }
            );
            for a in &l.addrs {
                s += &format!("    addr {a}\n");
            }
        }
        if style.stats {
            let c = &l.counters;
            s += &format!(
                "    RX:  bytes packets dropped\n    {:>10} {:>7} {:>7}\n    TX:  bytes packets dropped\n    {:>10} {:>7} {:>7}\n",
                c.rx_bytes, c.rx_packets, c.rx_dropped, c.tx_bytes, c.tx_packets, c.tx_dropped
            );
            for (why, n) in &c.drops {
                s += &format!("    dropped {why}: {n}\n");
            }
        }
    }
    s
}

pub fn json(links: &[SlaveView], style: Style) -> Value {
    Value::Array(
        links
            .iter()
            .map(|l| {
                let mut o = json!({
                    "ifindex": l.ifindex,
                    "ifname": l.ifname,
                    "link": l.master,
                    "flags": l.flags,
                    "mtu": l.mtu,
                    "operstate": l.operstate,
                    "link_type": "ether",
                    "address": address(l),
                    "broadcast": "ff:ff:ff:ff:ff:ff",
                    "netns": l.netns,
                    "netns_id": l.netns_id,
                    "link_netns": l.master_netns,
                });
                if style.details {
                    let mut data = json!({ "mode": l.mode.as_str() });
                    data[l.port_flags.as_str()] = json!(true);
                    if l.source_guard {
                        // An ipvlan-rs extension: absent, as from `ip`, when off.
                        data["source_guard"] = json!(true);
                    }
                    if l.host_access {
                        data["host_access"] = json!(true);
                    }
                    o["linkinfo"] = json!({ "info_kind": "ipvlan", "info_data": data });
                    o["dev_id"] = json!(format!("{:#x}", l.dev_id));
                    o["host_end"] = json!(l.host_end);
                    o["backend"] = json!(l.backend);
                    o["fast_path"] = json!(l.fast_path);
                    o["addrs"] = json!(l.addrs);
                }
                if style.stats {
                    let c = &l.counters;
                    let drops: serde_json::Map<String, Value> = c
                        .drops
                        .iter()
                        .map(|(why, n)| (why.as_str().to_string(), json!(n)))
                        .collect();
                    o["stats64"] = json!({
                        "rx": { "bytes": c.rx_bytes, "packets": c.rx_packets, "dropped": c.rx_dropped },
                        "tx": { "bytes": c.tx_bytes, "packets": c.tx_packets, "dropped": c.tx_dropped },
                        "drops": drops,
                    });
                }
                o
            })
            .collect(),
    )
}

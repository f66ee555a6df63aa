//! The parent link of a network, in the plugin's (dockerd's) namespace: looked up, and
//! made and removed where Docker's ipvlan driver makes it — a dummy link for a network
//! without `-o parent`, a VLAN link for a dotted name such as `eth0.10`. Made with
//! iproute2's `ip`, which ipvlan-rs already needs.

use std::process::Command;

use ipvlan_sys::rtnl::Rtnl;

/// Docker's name for a network's own dummy parent: `di-` and the network ID's first 12.
pub fn dummy_name(network_id: &str) -> String {
    format!("di-{}", short_id(network_id))
}

pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub fn exists(name: &str) -> Result<bool, String> {
    Rtnl::new()
        .map_err(|e| format!("netlink socket: {e}"))?
        .link_by_name(name)
        .map(|l| l.is_some())
        .map_err(|e| format!("looking up link {name}: {e}"))
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A dummy link, or where the kernel has no dummy driver (`CONFIG_DUMMY`), a veth pair
/// whose peer `dp-…` stays unused beside it: either is a master that reaches nothing.
pub fn create_dummy(name: &str) -> Result<(), String> {
    if let Err(e) = ip(&["link", "add", name, "type", "dummy"]) {
        let peer = format!("dp-{}", name.trim_start_matches("di-"));
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])
            .map_err(|v| format!("{e}; as a veth pair: {v}"))?;
        ip(&["link", "set", &peer, "up"])?;
    }
    ip(&["link", "set", name, "up"])
}

/// `eth0.10`: a VLAN link with ID 10 on `eth0`, with Docker's checks and errors.
pub fn create_vlan(name: &str) -> Result<(), String> {
    let (base, id) = name.rsplit_once('.').ok_or_else(|| not_found(name))?;
    let vid: i64 = id.parse().map_err(|_| {
        format!("unable to parse a valid vlan id from: {name} (ex. eth0.10 for vlan 10)")
    })?;
    if !(1..=4094).contains(&vid) {
        return Err(format!("vlan id must be between 1-4094, received: {vid}"));
    }
    if !exists(base)? {
        return Err(not_found(base));
    }
    let vid = vid.to_string();
    ip(&[
        "link", "add", "link", base, "name", name, "type", "vlan", "id", &vid,
    ])?;
    ip(&["link", "set", name, "up"])
}

pub fn not_found(name: &str) -> String {
    format!("-o parent interface was not found on the host: {name}")
}

/// Removes link `name` if it is there.
pub fn delete(name: &str) -> Result<(), String> {
    let mut rt = Rtnl::new().map_err(|e| format!("netlink socket: {e}"))?;
    match rt.link_by_name(name) {
        Ok(Some(l)) => rt
            .del_link(l.index)
            .map_err(|e| format!("deleting link {name}: {e}")),
        Ok(None) => Ok(()),
        Err(e) => Err(format!("looking up link {name}: {e}")),
    }
}

//! Bad input gets a clear error naming the object, the iproute2 exit status (1 usage
//! error, 2 refused by the system), and leaves no device behind. Root only (see `common`).

#![forbid(unsafe_code)]

mod common;

use common::*;

/// Runs `ipvlan ARGS` in HOST and checks that it fails with one of `codes`, that its
/// stderr mentions `names` (all of them, as words), and that HOST has the same links
/// afterwards as before.
fn refused(t: &Topo, args: &[&str], codes: &[i32], names: &[&str]) -> String {
    let before = link_names(&t.host);
    let out = t.ipvlan(&t.host, args);
    let err = stderr(&out);
    let code = out.status.code();
    assert!(
        code.is_some_and(|c| codes.contains(&c)),
        "`ipvlan {}`: exit status {code:?}, expected one of {codes:?}\nstderr: {err}",
        args.join(" ")
    );
    assert!(
        !err.trim().is_empty(),
        "`ipvlan {}`: no error message",
        args.join(" ")
    );
    for name in names {
        assert!(
            mentions(&err, name),
            "`ipvlan {}`: the error does not name {name:?}: {err}",
            args.join(" ")
        );
    }
    // Give a misbehaving daemon a moment to finish anything half-made, then compare.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        link_names(&t.host),
        before,
        "`ipvlan {}` left a device behind in HOST",
        args.join(" ")
    );
    let listed = t.ipvlan_ok(&t.host, &["link", "show"]);
    for a in args.iter().filter(|a| a.starts_with("ipvl")) {
        // A refused add must not leave an entry in the daemon either (unless that name
        // already existed before, as in the name-in-use case, which checks itself).
        if before.contains(*a) {
            continue;
        }
        assert!(
            !listed.contains(a),
            "`ipvlan {}`: the daemon lists {a} anyway:\n{listed}",
            args.join(" ")
        );
    }
    err
}

/// Whether `text` contains `word` delimited by non-identifier characters.
fn mentions(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        let is_ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !is_ident(before) && !is_ident(after)
    })
}

fn add(master: &str, name: &str, tail: &[&'static str]) -> Vec<String> {
    let mut v: Vec<String> = ["link", "add", "link", master, "name", name, "type"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(tail.iter().map(|s| s.to_string()));
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn unknown_master() {
    require_root();
    let t = Topo::new(0);
    let err = refused(
        &t,
        &strs(&add("eth9", "ipvl0", &["ipvlan", "mode", "l2"])),
        &[1],
        &["eth9"],
    );
    assert!(
        err.contains("Cannot find device \"eth9\""),
        "expected iproute2's wording `Cannot find device \"eth9\"`: {err}"
    );
}

#[test]
fn loopback_master() {
    require_root();
    let t = Topo::new(0);
    refused(
        &t,
        &strs(&add("lo", "ipvl0", &["ipvlan", "mode", "l2"])),
        &[2],
        &["lo"],
    );
}

#[test]
fn non_ethernet_master() {
    require_root();
    let t = Topo::new(0);
    ok(&format!("ip -n {} tuntap add dev tun0 mode tun", t.host));
    refused(
        &t,
        &strs(&add("tun0", "ipvl0", &["ipvlan", "mode", "l2"])),
        &[2],
        &["tun0"],
    );
}

#[test]
fn name_in_use() {
    require_root();
    let t = Topo::new(1);
    let (host, ns0) = (t.host.clone(), t.ns(0).to_string());
    t.ipvlan_ok(
        &host,
        &strs(&add("eth0", "ipvl0", &["ipvlan", "mode", "l2"])),
    );
    refused(
        &t,
        &strs(&add("eth0", "ipvl0", &["ipvlan", "mode", "l2"])),
        &[2],
        &["ipvl0"],
    );
    // The first one still works.
    ok(&format!("ip -n {host} link set dev ipvl0 netns {ns0}"));
    ok(&format!("ip -n {ns0} link set dev ipvl0 up"));
    ok(&format!("ip -n {ns0} addr add {}/24 dev ipvl0", t.v4(10)));
    t.assert_ping(&ns0, &t.router_v4());
}

#[test]
fn name_in_use_by_other_device() {
    // The name is taken by something that is not ours (the master itself).
    require_root();
    let t = Topo::new(0);
    refused(
        &t,
        &strs(&add("eth0", "eth0", &["ipvlan", "mode", "l2"])),
        &[2],
        &["eth0"],
    );
}

#[test]
fn name_too_long() {
    require_root();
    let t = Topo::new(0);
    let name = "ipvl0123456789ab"; // 16 bytes; IFNAMSIZ-1 is 15
    assert_eq!(name.len(), 16);
    refused(
        &t,
        &strs(&add("eth0", name, &["ipvlan", "mode", "l2"])),
        &[1],
        &[name],
    );
}

#[test]
fn unknown_keyword() {
    require_root();
    let t = Topo::new(0);
    refused(
        &t,
        &strs(&add("eth0", "ipvl0", &["ipvlan", "foo"])),
        &[1],
        &["foo"],
    );
}

#[test]
fn unknown_mode() {
    require_root();
    let t = Topo::new(0);
    refused(
        &t,
        &strs(&add("eth0", "ipvl0", &["ipvlan", "mode", "l4"])),
        &[1],
        &["l4"],
    );
}

#[test]
fn private_and_vepa_together() {
    require_root();
    let t = Topo::new(0);
    let err = refused(
        &t,
        &strs(&add(
            "eth0",
            "ipvl0",
            &["ipvlan", "mode", "l2", "private", "vepa"],
        )),
        &[1],
        &[],
    );
    assert!(
        mentions(&err, "private") || mentions(&err, "vepa"),
        "the error names neither flag: {err}"
    );
}

#[test]
fn other_link_type() {
    require_root();
    let t = Topo::new(0);
    refused(
        &t,
        &strs(&add("eth0", "ipvl0", &["macvlan", "mode", "bridge"])),
        &[1, 2],
        &["macvlan"],
    );
}

#[test]
fn del_unknown_device() {
    require_root();
    let t = Topo::new(0);
    let err = refused(&t, &["link", "del", "dev", "ipvl9"], &[1], &["ipvl9"]);
    assert!(
        err.contains("Cannot find device \"ipvl9\""),
        "expected iproute2's wording `Cannot find device \"ipvl9\"`: {err}"
    );
}

#[test]
fn del_a_device_that_is_not_ours() {
    // `ipvlan link del` must not delete devices it does not manage (here: the master).
    require_root();
    let t = Topo::new(0);
    refused(&t, &["link", "del", "dev", "eth0"], &[1, 2], &["eth0"]);
    assert!(link_exists(&t.host, "eth0"));
}

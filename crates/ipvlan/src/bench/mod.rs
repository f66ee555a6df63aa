//! `ipvlan bench`: ipvlan-rs against the kernel's macvlan (bridge mode) on the identical
//! topology, in scratch namespaces, variants in alternation for several rounds.
//!
//! ```text
//!   NS0: slave 10.77.0.10          NS1: slave 10.77.0.11
//!          \                      /
//!   HOST: eth0 (master) ---- veth ---- EXT: eth0 10.77.0.1 (the external host)
//! ```
//! In l3 and l3s mode EXT is 10.77.1.1, HOST's eth0 10.77.1.2, and EXT routes
//! 10.77.0.0/24 via HOST; in l3s HOST also masquerades the slaves' traffic to EXT (an
//! nftables `masquerade` rule, so conntrack tracks every flow and its cost is in the
//! figures, as a Kubernetes node's would be). For the host→slave figures HOST gets
//! 10.77.0.2 and reaches the slaves with ipvlan-rs's `host_access on`, or, for macvlan,
//! with the usual workaround: a macvlan "shim" in HOST holding the address, with routes
//! to the slaves. Every namespace is new and named after this process; nothing touches the
//! machine's own interfaces. Each ipvlan-rs run has its own daemon as a child process
//! (so its memory and CPU are its own). A benchmark, not a test: nothing is asserted.

mod cmd;
mod cpu;
mod load;
mod report;
mod topo;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail};

use cmd::ip_batch;
use cpu::machine_cpu_secs;
use load::{churn, iperf, num, percentile, udp_latency};
use report::{GBPS, MICROS, MPPS, Rec, S_PER_GB, SECS, print_table, write_json};
use topo::{Daemon, Topo, add_slave, busy_slaves, clean_up_on_signals, host_to_slaves, reach};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rounds; each runs every variant once, in alternation.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How many of the rounds (the first ones) also measure the slave-count figures (500
    /// slaves, memory, 1000 creates and deletes), which take minutes [default: all].
    #[arg(long, value_name = "N")]
    scale_rounds: Option<usize>,
    /// Seconds per iperf3 run [default: 5; 2 with --quick].
    #[arg(long)]
    seconds: Option<u64>,
    /// A smoke run for CI: one round of 2-second runs.
    #[arg(long)]
    quick: bool,
    /// The ipvlan-rs backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "user,kernel")]
    backends: Vec<String>,
    /// The ipvlan-rs modes to measure (macvlan bridge is always measured beside them).
    #[arg(long, value_delimiter = ',', default_value = "l2,l3,l3s", value_parser = ["l2", "l3", "l3s"])]
    modes: Vec<String>,
    /// With `--json` (the global flag): write every raw sample to FILE as JSON.
    #[arg(value_name = "FILE")]
    json_file: Option<PathBuf>,
    /// Passed to every ipvlan-rs daemon: microseconds its user-backend switching threads
    /// keep polling after a frame.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 0)]
    busy_poll: u64,
    /// Scale the 100/500/1000-slave counts (a smoke uses 0.02).
    #[arg(long, default_value_t = 1.0, hide = true)]
    slaves_scale: f64,
}

/// macvlan bridge (`backend == None`) or ipvlan-rs with a backend and mode.
#[derive(Clone, Debug)]
struct Variant {
    backend: Option<String>,
    /// `l2`, `l3` or `l3s` (macvlan: `l2`).
    mode: &'static str,
}

impl Variant {
    fn label(&self) -> String {
        match &self.backend {
            None => "macvlan bridge".into(),
            Some(b) => format!("ipvlan-rs {} {b}", self.mode),
        }
    }
    /// The slaves' traffic to EXT is routed by HOST (l3, l3s).
    fn routed(&self) -> bool {
        self.mode != "l2"
    }
    fn ext_addr(&self) -> &'static str {
        if self.routed() {
            "10.77.1.1"
        } else {
            "10.77.0.1"
        }
    }
}

/// A setup step failed: the variant cannot be measured (e.g. the daemon refused a backend).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unavailable(String);

fn unavailable(e: anyhow::Error) -> anyhow::Error {
    anyhow!(Unavailable(format!("{e:#}")))
}

struct Plan {
    secs: u64,
    busy_poll: u64,
    round_trips: usize,
    many: usize,
    mem_counts: [usize; 3],
    /// Rounds up to this one measure the slave-count figures.
    scale_rounds: usize,
}

fn run_variant(v: &Variant, plan: &Plan, rec: &mut Rec) -> anyhow::Result<()> {
    let tag = format!("r{}-{}", rec.round, v.label().replace(' ', "-"));
    let topo = Topo::new(&tag, v.mode).map_err(unavailable)?;
    let daemon = match &v.backend {
        Some(b) => Some(Daemon::start(&tag, b, plan.busy_poll).map_err(unavailable)?),
        None => None,
    };
    busy_slaves(&topo, daemon.as_ref(), v.mode).map_err(unavailable)?;
    let (ns0, ns1, ext) = (&topo.ns[0], &topo.ns[1], &topo.ext);
    for (from, to) in [
        (ns0, "10.77.0.11"),
        (ns0, v.ext_addr()),
        (ext, "10.77.0.10"),
    ] {
        reach(from, to).map_err(unavailable)?;
    }

    let paths = [
        ("slave→slave", ns0, ns1, "10.77.0.11"),
        ("slave→external", ns0, ext, v.ext_addr()),
        ("external→slave", ext, ns0, "10.77.0.10"),
    ];
    for (path, from, to, addr) in paths {
        for (flows, fig) in [(1, "1 flow"), (4, "4 flows")] {
            let fig = format!("TCP {path}, {fig}");
            let (cpu0, d0) = (machine_cpu_secs(), daemon.as_ref().map(Daemon::cpu_secs));
            let r = iperf(from, to, addr, plan.secs, &["-P", &flows.to_string()]);
            let r = r.and_then(|j| {
                Ok((
                    num(&j, "/end/sum_received/bits_per_second")?,
                    num(&j, "/end/sum_received/bytes")?,
                ))
            });
            let (cpu, d) = (
                machine_cpu_secs() - cpu0,
                daemon.as_ref().map(Daemon::cpu_secs),
            );
            match r {
                Ok((bps, bytes)) if path == "slave→slave" && flows == 1 => {
                    let gb = bytes / 1e9;
                    rec.put(v, &fig, GBPS, bps / 1e9);
                    rec.put(
                        v,
                        "CPU per GB (TCP slave→slave, whole machine)",
                        S_PER_GB,
                        cpu / gb,
                    );
                    if let (Some(d), Some(d0)) = (d, d0) {
                        rec.put(
                            v,
                            "daemon CPU per GB (the same run)",
                            S_PER_GB,
                            (d - d0) / gb,
                        );
                    }
                }
                r => rec.take(v, &fig, GBPS, r.map(|(bps, _)| bps / 1e9)),
            }
        }
    }

    let r = iperf(
        ns0,
        ns1,
        "10.77.0.11",
        plan.secs,
        &["-u", "-b", "0", "-l", "64"],
    );
    let r = r.and_then(|j| {
        let got =
            num(&j, "/end/sum_received/packets")? - num(&j, "/end/sum_received/lost_packets")?;
        Ok(got / num(&j, "/end/sum_received/seconds")? / 1e6)
    });
    rec.take(v, "UDP 64 B slave→slave, received", MPPS, r);

    match udp_latency(ns0, ns1, plan.round_trips) {
        Ok(half) => {
            rec.put(v, "UDP half round trip p50", MICROS, percentile(&half, 0.5));
            rec.put(
                v,
                "UDP half round trip p99",
                MICROS,
                percentile(&half, 0.99),
            );
        }
        Err(e) => rec.fail(v, "UDP half round trip", e),
    }

    // HOST to its own slaves (left on for what follows: no idle slave has an address).
    match host_to_slaves(&topo, daemon.as_ref()) {
        Ok(()) => {
            let r = iperf(&topo.host, ns0, "10.77.0.10", plan.secs, &[])
                .and_then(|j| num(&j, "/end/sum_received/bits_per_second"));
            rec.take(v, "TCP host→slave, 1 flow", GBPS, r.map(|bps| bps / 1e9));
            match udp_latency(&topo.host, ns1, plan.round_trips) {
                Ok(half) => rec.put(
                    v,
                    "UDP half round trip host→slave p50",
                    MICROS,
                    percentile(&half, 0.5),
                ),
                Err(e) => rec.fail(v, "UDP half round trip host→slave", e),
            }
        }
        Err(e) => rec.fail(v, "host→slave (host_access / macvlan shim)", e),
    }

    if v.routed() || rec.round > plan.scale_rounds {
        return Ok(()); // the slave-count figures: in l2 only, in the first scale rounds
    }
    // The same TCP slave→slave with `many` slaves on the master: the rest idle, up, in HOST.
    let idle: Vec<String> = (2..plan.many).map(|i| format!("idle{i}")).collect();
    let made = match &daemon {
        None => {
            let add = |n| format!("link add link eth0 name {n} type macvlan mode bridge");
            ip_batch(&topo.host, &idle.iter().map(add).collect::<Vec<_>>())
        }
        Some(_) => idle
            .iter()
            .try_for_each(|n| add_slave(&topo, daemon.as_ref(), n, "l2")),
    };
    let r = made
        .and_then(|()| {
            ip_batch(
                &topo.host,
                &idle
                    .iter()
                    .map(|n| format!("link set {n} up"))
                    .collect::<Vec<_>>(),
            )
        })
        .map(|()| {
            // A busy pair among idle slaves: both variants wait for the new devices'
            // own start-up traffic (DAD, MLD, router solicitations), and ipvlan-rs for
            // its daemon to have learned every address (reported as its own figure).
            std::thread::sleep(Duration::from_secs(2));
            if let Some(d) = &daemon {
                let waited = d.settle(Duration::from_secs(60));
                rec.take(
                    v,
                    &format!("daemon settled after {} slaves came up", plan.many),
                    SECS,
                    Ok(waited.as_secs_f64() + 2.0),
                );
            }
        })
        .and_then(|()| iperf(ns0, ns1, "10.77.0.11", plan.secs, &[]))
        .and_then(|j| num(&j, "/end/sum_received/bits_per_second"));
    let fig = format!("TCP slave→slave, 1 flow, {} slaves", plan.many);
    rec.take(v, &fig, GBPS, r.map(|bps| bps / 1e9));
    drop(daemon);
    drop(topo);
    if let Err(e) = churn(v, plan, rec, &tag) {
        rec.fail(v, "create/delete", e);
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{nproc} CPUs ({cpu}), Linux {}", kernel.trim())
}

fn check_tools() -> anyhow::Result<()> {
    for (tool, pkg) in [
        ("iperf3", "iperf3"),
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
    ] {
        if Command::new(tool).arg("-V").output().is_err() {
            bail!(
                "`{tool}` not found: install the Debian package {pkg} (`apt-get install {pkg}`, or `./x deps`)"
            );
        }
    }
    Ok(())
}

/// `json` is the global `-j/--json` flag: `ipvlan bench --json FILE` names the file.
pub fn run(args: Args, json: bool) -> anyhow::Result<()> {
    if json != args.json_file.is_some() {
        bail!("`--json FILE` writes the raw samples: give both or neither");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark creates network namespaces and devices: run it as root (sudo)");
    }
    check_tools()?;
    clean_up_on_signals()?;
    let rounds = if args.quick { 1 } else { args.rounds.max(1) };
    let secs = args.seconds.unwrap_or(if args.quick { 2 } else { 5 });
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a float-to-int `as` saturates: a scale below zero (or NaN) gives 0, so 1"
    )]
    let scale = |n: usize| ((n as f64 * args.slaves_scale).round() as usize).max(1);
    let plan = Plan {
        secs,
        busy_poll: args.busy_poll,
        round_trips: if args.quick { 2000 } else { 20000 },
        many: scale(500).max(2),
        mem_counts: [1, scale(100), scale(1000)],
        scale_rounds: args.scale_rounds.unwrap_or(rounds),
    };
    let mut variants = vec![Variant {
        backend: None,
        mode: "l2",
    }];
    for mode in ["l2", "l3", "l3s"] {
        if !args.modes.iter().any(|m| m == mode) {
            continue;
        }
        for b in &args.backends {
            variants.push(Variant {
                backend: Some(b.clone()),
                mode,
            });
        }
    }
    let machine = machine();
    println!("ipvlan bench: {rounds} round(s), {secs} s per run, on {machine}");
    if args.busy_poll > 0 {
        println!(
            "daemons poll {} µs after a frame (--busy-poll)",
            args.busy_poll
        );
    }
    let mut rec = Rec::default();
    for round in 1..=rounds {
        rec.round = round;
        for v in &variants {
            if rec.unavailable.contains_key(&v.label()) {
                continue;
            }
            eprintln!("round {round}/{rounds}: {}", v.label());
            if let Err(e) = run_variant(v, &plan, &mut rec) {
                match e.downcast_ref::<Unavailable>() {
                    Some(u) => {
                        eprintln!("  ! unavailable: {u}");
                        rec.unavailable.insert(v.label(), u.0.clone());
                    }
                    None => rec.fail(v, "run", e),
                }
            }
        }
    }
    print_table(&rec, &variants, &machine);
    if let Some(file) = &args.json_file {
        write_json(file, &rec, &machine, rounds, secs)?;
    }
    Ok(())
}

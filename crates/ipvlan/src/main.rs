//! `ipvlan`: the IPvlan device in userspace — CLI, daemon and demo in one binary.

#![forbid(unsafe_code)]

mod bench;
mod client;
mod daemon;
mod demo;
mod grammar;
mod home;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ipvlan",
    version,
    about = "IPvlan devices without the kernel module: slaves share the master's MAC and are demultiplexed by IP.",
    after_help = "Examples (the kernel's ipvlan HOWTO):\n  ipvlan link add link eth0 ipvl0 type ipvlan mode l2\n  ip link set dev ipvl0 netns ns0\n  ip netns exec ns0 ip addr add 10.0.0.2/24 dev ipvl0\n  ipvlan -d link show\n  ipvlan link set dev ipvl0 type ipvlan mode l2 private\n  ipvlan link del dev ipvl0"
)]
struct Cli {
    /// Print details (mode and flags), as `ip -d`.
    #[arg(short = 'd', long = "details", global = true)]
    details: bool,
    /// Print JSON, as `ip -j`.
    #[arg(short = 'j', long = "json", global = true)]
    json: bool,
    /// Print counters, as `ip -s`.
    #[arg(short = 's', long = "stats", global = true)]
    stats: bool,
    /// Pretty-print JSON, as `ip -p`.
    #[arg(short = 'p', long = "pretty", global = true)]
    pretty: bool,
    /// Run in network namespace NAME (`/run/netns/NAME`), as `ip -n`.
    #[arg(short = 'n', long = "netns", global = true, value_name = "NAME")]
    netns: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Add, change, delete and show ipvlan links (the iproute2 grammar).
    #[command(
        disable_help_flag = true,
        after_help = grammar::USAGE
    )]
    Link {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the daemon in the foreground (for service managers).
    #[command(
        after_help = "Examples:\n  ipvlan daemon\n  ipvlan daemon --socket /run/ipvlan-rs/ipvlan.sock --metrics 127.0.0.1:9465\n  ipvlan daemon --metrics /run/ipvlan-rs/metrics.sock"
    )]
    Daemon {
        /// Control socket path [default: $IPVLAN_SOCKET or /run/ipvlan-rs/ipvlan.sock].
        #[arg(long)]
        socket: Option<String>,
        /// Serve counters in the Prometheus text format on a Unix socket PATH or a
        /// loopback ADDR:PORT (opt-in).
        #[arg(long, value_name = "PATH|ADDR:PORT")]
        metrics: Option<String>,
        /// The datapath backend: `kernel` (nftables netdev `fwd`, the default; falls back
        /// to `user` where the kernel cannot run it) or `user` (packet sockets only).
        #[arg(long, default_value = "kernel", value_parser = ["kernel", "user"])]
        backend: String,
        /// Microseconds a user-backend switching thread keeps polling after a frame
        /// before it sleeps: lower latency for request/response traffic, paid in CPU
        /// time (0: sleep at once).
        #[arg(long, value_name = "MICROSECONDS", default_value_t = 0)]
        busy_poll: u64,
        /// The kernel backend's BPF fast path (`on`, the default: unicast handed straight
        /// to the slave end or the master, L3 egress routed in the kernel without the
        /// master namespace's netfilter hooks, L3S forwarded by the master's namespace
        /// through PREROUTING, FORWARD and POSTROUTING; `off`: nftables alone, one more
        /// veth hop a frame, L3 egress on the daemon's exact path through the master's
        /// OUTPUT and POSTROUTING and L3S through its INPUT (NFQUEUE) and OUTPUT, as the
        /// kernel driver does).
        #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"])]
        fast_path: String,
        /// Leave the caller's namespaces first: a session of its own, the host's network,
        /// cgroup and mount namespaces (PID 1's), a cgroup of its own. What a client
        /// that starts a daemon asks for.
        #[arg(long)]
        home: bool,
    },
    /// Build the kernel HOWTO's topology in scratch namespaces, test it, tear it down.
    #[command(after_help = "Example:\n  sudo ipvlan demo")]
    Demo,
    /// Stream changes: slaves added, removed and moved, addresses learned and refused,
    /// mode changes, master up and down (JSON lines with -j).
    #[command(after_help = "Examples:\n  ipvlan monitor\n  ipvlan -j monitor")]
    Monitor,
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    #[command(after_help = "Example:\n  ipvlan completions bash > /etc/bash_completion.d/ipvlan")]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), generated from this command line definition.
    #[command(after_help = "Example:\n  ipvlan man > /usr/local/share/man/man8/ipvlan.8")]
    Man,
    /// Benchmark ipvlan-rs against the kernel's macvlan in scratch namespaces (root).
    #[command(
        after_help = "Examples:\n  sudo ipvlan bench\n  sudo ipvlan bench --rounds 5 --backends kernel --json bench.json\n  sudo ipvlan bench --quick"
    )]
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(name) = &cli.netns {
        // As `ip -n`: this process enters the namespace; masters and devices are then
        // resolved there.
        let path = format!("/run/netns/{name}");
        let entered = std::fs::File::open(&path).and_then(|f| {
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
        if let Err(e) = entered {
            eprintln!("Cannot open network namespace \"{name}\": {e}");
            return ExitCode::from(1);
        }
    }
    match cli.cmd {
        Cmd::Link { args } => client::link(
            &args,
            output::Style {
                details: cli.details,
                stats: cli.stats,
            },
            cli.json,
            cli.pretty,
        ),
        Cmd::Daemon {
            socket,
            metrics,
            backend,
            busy_poll,
            fast_path,
            home,
        } => {
            let went_home = if home {
                match home::go_home() {
                    Ok(done) => done,
                    Err(e) => {
                        eprintln!("ipvlan daemon: cannot leave the caller's namespaces: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                Vec::new()
            };
            let socket = socket.unwrap_or_else(ipvlan_proto::socket_path);
            let backend = if backend == "user" {
                ipvlan_datapath::Backend::User
            } else {
                ipvlan_datapath::Backend::Kernel
            };
            let busy_poll = std::time::Duration::from_micros(busy_poll);
            match run_daemon(
                &socket,
                metrics.as_deref(),
                backend,
                busy_poll,
                fast_path == "on",
                &went_home,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ipvlan daemon: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Monitor => client::monitor(cli.json),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "ipvlan", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Cmd::Man => {
            use clap::CommandFactory;
            match clap_mangen::Man::new(Cli::command())
                .section("8")
                .render(&mut std::io::stdout())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ipvlan man: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Bench(args) => match bench::run(args, cli.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ipvlan bench: {e:#}");
                ExitCode::from(2)
            }
        },
        Cmd::Demo => match demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ipvlan demo: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn run_daemon(
    socket: &str,
    metrics: Option<&str>,
    backend: ipvlan_datapath::Backend,
    busy_poll: std::time::Duration,
    fast_path: bool,
    went_home: &[String],
) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use nix::sys::signal::{SigSet, Signal};

    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // A log file (an auto-started daemon's, a service's journal) gets no colour codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IPVLAN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    for line in went_home {
        tracing::info!("home: {line}");
    }
    // Block the stop signals in every thread; one thread waits for them.
    let mut stop_signals = SigSet::empty();
    stop_signals.add(Signal::SIGTERM);
    stop_signals.add(Signal::SIGINT);
    stop_signals.add(Signal::SIGHUP);
    stop_signals.thread_block()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            if let Ok(sig) = stop_signals.wait() {
                tracing::info!("{sig:?}: stopping; slaves and their addresses stay in place");
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
    let path = std::path::Path::new(socket);
    let mut d = daemon::Daemon::new(path)?
        .with_backend(backend)
        .with_busy_poll(busy_poll)
        .with_fast_path(fast_path);
    if let Some(spec) = metrics {
        d = d.with_metrics(daemon::MetricsListener::bind(spec)?)?;
        tracing::info!("metrics on {spec}");
    }
    tracing::info!("listening on {socket} (backend {})", backend.as_str());
    d.adopt();
    let r = d.run(&stop);
    let _ = std::fs::remove_file(path);
    r
}

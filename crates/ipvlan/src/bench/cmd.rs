//! Commands the benchmark runs: each with a time limit, killed past it; `ip` and `ip -batch`.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Runs `cmd`, killing it after `limit`; fails unless it exits 0.
pub(super) fn run_cmd(cmd: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let out = output(cmd, limit)?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{cmd:?}: {}: {}", out.status, err.trim());
    }
    Ok(out)
}

/// Runs `cmd` to completion, killing it after `limit`, and collects its output.
pub(super) fn output(cmd: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    let (mut o, mut e) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let err_reader = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = e.read_to_end(&mut v);
        v
    });
    let killer = KillAfter::new(child.id(), limit);
    let mut stdout = vec![];
    let _ = o.read_to_end(&mut stdout);
    let status = child.wait()?;
    let timed_out = killer.finish();
    let stderr = err_reader.join().unwrap_or_default();
    if timed_out {
        bail!("{shown}: killed after {limit:?}");
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Sends SIGKILL to a process if it is still running after a time limit.
struct KillAfter {
    done: Arc<AtomicBool>,
    fired: std::thread::JoinHandle<bool>,
}

impl KillAfter {
    fn new(pid: u32, limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let fired = std::thread::spawn(move || {
            let end = Instant::now() + limit;
            while Instant::now() < end {
                if d.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            i32::try_from(pid).is_ok_and(|pid| {
                let pid = nix::unistd::Pid::from_raw(pid);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok()
            })
        });
        KillAfter { done, fired }
    }
    fn finish(self) -> bool {
        self.done.store(true, Ordering::Relaxed);
        self.fired.join().unwrap_or(false)
    }
}

pub(super) fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = run_cmd(Command::new("ip").args(args), Duration::from_secs(30))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n NS -batch -` with `lines`.
pub(super) fn ip_batch(ns: &str, lines: &[String]) -> anyhow::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let file = std::env::temp_dir().join(format!("ipvlan-bench-{}.batch", std::process::id()));
    std::fs::write(&file, lines.join("\n") + "\n")?;
    let r = ip(&["-n", ns, "-batch", file.to_str().unwrap_or_default()]);
    let _ = std::fs::remove_file(&file);
    r.map(drop)
}

//! CPU accounting: the whole machine's busy seconds (`/proc/stat`) and the clock tick
//! the kernel counts process times in.

pub(super) fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// Busy CPU seconds of the whole machine so far (/proc/stat: all but idle and iowait).
pub(super) fn machine_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| f.get(i).unwrap_or(&0.0));
    busy.sum::<f64>() / clk_tck()
}

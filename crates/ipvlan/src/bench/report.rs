//! The samples (`Rec`), their medians, the ratio table against macvlan and the raw JSON.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::json;

use super::Variant;

/// A unit, and whether more is better.
#[derive(Clone, Copy)]
pub(super) struct Unit(&'static str, bool);

pub(super) const GBPS: Unit = Unit("Gbit/s", true);
pub(super) const MPPS: Unit = Unit("Mpps", true);
pub(super) const MICROS: Unit = Unit("µs", false);
pub(super) const S_PER_GB: Unit = Unit("s/GB", false);
pub(super) const MIB: Unit = Unit("MiB", false);
pub(super) const SECS: Unit = Unit("s", false);

#[derive(serde::Serialize)]
struct Sample {
    round: usize,
    variant: String,
    figure: String,
    unit: &'static str,
    higher_is_better: bool,
    value: f64,
}

#[derive(Default)]
pub(super) struct Rec {
    samples: Vec<Sample>,
    errors: Vec<String>,
    pub(super) unavailable: BTreeMap<String, String>,
    pub(super) round: usize,
}

impl Rec {
    pub(super) fn put(&mut self, v: &Variant, figure: &str, unit: Unit, x: f64) {
        self.samples.push(Sample {
            round: self.round,
            variant: v.label(),
            figure: figure.into(),
            unit: unit.0,
            higher_is_better: unit.1,
            value: x,
        });
    }
    /// Records a measurement or its failure.
    pub(super) fn take(&mut self, v: &Variant, figure: &str, unit: Unit, r: anyhow::Result<f64>) {
        match r {
            Ok(x) => self.put(v, figure, unit, x),
            Err(e) => self.fail(v, figure, e),
        }
    }
    pub(super) fn fail(&mut self, v: &Variant, figure: &str, e: anyhow::Error) {
        let msg = format!("round {}, {}, {figure}: {e:#}", self.round, v.label());
        eprintln!("  ! {msg}");
        self.errors.push(msg);
    }
    fn values(&self, variant: &str, figure: &str) -> Vec<(usize, f64)> {
        self.samples
            .iter()
            .filter(|s| s.variant == variant && s.figure == figure)
            .map(|s| (s.round, s.value))
            .collect()
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Writes every raw sample, the unavailable variants and the failures to `file`.
pub(super) fn write_json(
    file: &Path,
    rec: &Rec,
    machine: &str,
    rounds: usize,
    secs: u64,
) -> anyhow::Result<()> {
    let doc = json!({
        "machine": machine,
        "rounds": rounds,
        "seconds": secs,
        "samples": rec.samples,
        "unavailable": rec.unavailable,
        "errors": rec.errors,
    });
    std::fs::write(file, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("raw samples: {}", file.display());
    Ok(())
}

fn fmt(x: Option<f64>) -> String {
    match x {
        None => "—".into(),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

pub(super) fn print_table(rec: &Rec, variants: &[Variant], machine: &str) {
    let mac = variants[0].label();
    println!("\nmachine: {machine}");
    println!(
        "ratio: ipvlan-rs/macvlan where higher is better (i/m), macvlan/ipvlan-rs where lower is \
         better (m/i); either way above 1 means ipvlan-rs did better. Medians over rounds; the \
         ratio is the median of the per-round ratios."
    );
    for v in &variants[1..] {
        let label = v.label();
        print!("\n== {label} vs {mac}");
        if v.routed() {
            print!(
                " (macvlan has no {} mode: compared against macvlan bridge)",
                v.mode
            );
        }
        if v.mode == "l3s" {
            print!("; with conntrack and a MASQUERADE rule on HOST");
        }
        println!();
        if let Some(why) = rec.unavailable.get(&label) {
            println!("   unavailable: {why}");
            continue;
        }
        println!(
            "{:<48} {:>10} {:>10} {:>12}  unit",
            "figure", "macvlan", "ipvlan-rs", "ratio"
        );
        let mut figs: Vec<(&str, &str, bool)> = vec![];
        for s in rec.samples.iter().filter(|s| s.variant == label) {
            if !figs.iter().any(|f| f.0 == s.figure) {
                figs.push((&s.figure, s.unit, s.higher_is_better));
            }
        }
        for (fig, unit, higher) in figs {
            let (m, i) = (rec.values(&mac, fig), rec.values(&label, fig));
            let ratios = i
                .iter()
                .filter_map(|&(r, iv)| {
                    let mv = m.iter().find(|x| x.0 == r)?.1;
                    Some(if higher { iv / mv } else { mv / iv })
                })
                .collect::<Vec<_>>();
            let ratio = median(ratios).map_or("—".into(), |r| {
                format!("{r:.2} ({})", if higher { "i/m" } else { "m/i" })
            });
            let mv = median(m.iter().map(|x| x.1).collect());
            let iv = median(i.iter().map(|x| x.1).collect());
            println!(
                "{fig:<48} {:>10} {:>10} {ratio:>12}  {unit}",
                fmt(mv),
                fmt(iv)
            );
        }
    }
    if !rec.errors.is_empty() {
        println!("\nfailed measurements:");
        for e in &rec.errors {
            println!("  {e}");
        }
    }
}

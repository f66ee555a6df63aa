//! The opt-in Prometheus endpoint: counters in the text exposition format.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use anyhow::Context;
use mio::Interest;
use mio::unix::SourceFd;

use super::{Daemon, METRICS};

/// A connection the metrics endpoint answers on.
trait ReadWrite: io::Read + io::Write {}
impl<T: io::Read + io::Write> ReadWrite for T {}

/// Where the opt-in Prometheus endpoint listens.
pub enum MetricsListener {
    Unix(UnixListener),
    Tcp(std::net::TcpListener),
}

impl MetricsListener {
    /// `PATH` (contains a '/') for a Unix socket, else `ADDR:PORT` on a loopback address.
    pub fn bind(spec: &str) -> anyhow::Result<Self> {
        if spec.contains('/') {
            let _ = std::fs::remove_file(spec);
            let l = UnixListener::bind(spec).with_context(|| format!("cannot listen on {spec}"))?;
            std::fs::set_permissions(spec, std::fs::Permissions::from_mode(0o600))?;
            Ok(Self::Unix(l))
        } else {
            let addr: std::net::SocketAddr = spec.parse().with_context(|| {
                format!("--metrics {spec}: expected a socket path or a loopback ADDR:PORT (e.g. 127.0.0.1:9465)")
            })?;
            if !addr.ip().is_loopback() {
                anyhow::bail!(
                    "--metrics {spec}: the metrics endpoint only listens on loopback (127.0.0.1 or [::1])"
                );
            }
            Ok(Self::Tcp(
                std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on {spec}"))?,
            ))
        }
    }

    pub(super) fn raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Self::Unix(l) => l.as_raw_fd(),
            Self::Tcp(l) => l.as_raw_fd(),
        }
    }
}

impl Daemon {
    /// Also serves counters in the Prometheus text format on `l`.
    pub fn with_metrics(mut self, l: MetricsListener) -> anyhow::Result<Self> {
        match &l {
            MetricsListener::Unix(u) => u.set_nonblocking(true)?,
            MetricsListener::Tcp(t) => t.set_nonblocking(true)?,
        }
        self.poll
            .registry()
            .register(&mut SourceFd(&l.raw_fd()), METRICS, Interest::READABLE)?;
        self.metrics = Some(l);
        Ok(self)
    }

    pub(super) fn serve_metrics(&mut self) {
        let body = self.render_metrics();
        let answer = |s: &mut dyn ReadWrite| {
            // Read the request head (its content does not matter), then answer.
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        };
        loop {
            let accepted: io::Result<Box<dyn ReadWrite>> = match &self.metrics {
                Some(MetricsListener::Unix(l)) => l.accept().map(|(s, _)| {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    Box::new(s) as Box<dyn ReadWrite>
                }),
                Some(MetricsListener::Tcp(l)) => l.accept().map(|(s, _)| {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    Box::new(s) as Box<dyn ReadWrite>
                }),
                None => return,
            };
            match accepted {
                Ok(mut s) => answer(&mut *s),
                Err(_) => return,
            }
        }
    }

    /// Every port's and slave's counters, in the Prometheus text exposition format.
    pub fn render_metrics(&mut self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        type Series = (
            &'static str,
            &'static str,
            fn(&ipvlan_datapath::Counters) -> u64,
        );
        let series: [Series; 6] = [
            ("rx_packets_total", "Frames delivered to the slave.", |c| {
                c.rx_packets
            }),
            ("rx_bytes_total", "Bytes delivered to the slave.", |c| {
                c.rx_bytes
            }),
            ("tx_packets_total", "Frames the slave sent.", |c| {
                c.tx_packets
            }),
            ("tx_bytes_total", "Bytes the slave sent.", |c| c.tx_bytes),
            (
                "rx_dropped_total",
                "Frames for the slave that were dropped.",
                |c| c.rx_dropped,
            ),
            (
                "tx_dropped_total",
                "Frames from the slave that were dropped.",
                |c| c.tx_dropped,
            ),
        ];
        let label = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            out,
            "# HELP ipvlan_port_info A port (master) and its mode and flags.\n# TYPE ipvlan_port_info gauge"
        );
        for (k, p) in self.ports.iter() {
            let _ = writeln!(
                out,
                "ipvlan_port_info{{master=\"{}\",master_netns=\"{}\",mode=\"{}\",flags=\"{}\"}} 1",
                label(&p.master_name),
                k.ns,
                p.port.mode().as_str(),
                p.port.flags().as_str()
            );
        }
        let slaves: Vec<(String, ipvlan_datapath::Counters)> = self
            .show_all()
            .into_iter()
            .map(|v| {
                (
                    format!(
                        "master=\"{}\",slave=\"{}\",dev_id=\"{}\"",
                        label(&v.master),
                        label(&v.ifname),
                        v.dev_id
                    ),
                    v.counters,
                )
            })
            .collect();
        for (name, help, get) in series {
            let _ = writeln!(
                out,
                "# HELP ipvlan_slave_{name} {help}\n# TYPE ipvlan_slave_{name} counter"
            );
            for (labels, c) in &slaves {
                let _ = writeln!(out, "ipvlan_slave_{name}{{{labels}}} {}", get(c));
            }
        }
        let _ = writeln!(
            out,
            "# HELP ipvlan_slave_drops_total Frames dropped, by reason.\n# TYPE ipvlan_slave_drops_total counter"
        );
        for (labels, c) in &slaves {
            for (why, n) in &c.drops {
                let _ = writeln!(
                    out,
                    "ipvlan_slave_drops_total{{{labels},reason=\"{}\"}} {n}",
                    why.as_str()
                );
            }
        }
        out
    }
}

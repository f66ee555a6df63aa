//! IPAM delegation: find the plugin in `CNI_PATH`, run it with our environment and the
//! network configuration (at a version it accepts), read its answer.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::cni::{CniError, CniResult, NetConf, code, negotiate};

/// Finds plugin `name` in the directories of `CNI_PATH`.
pub fn find(name: &str) -> Result<PathBuf, CniError> {
    let path = std::env::var_os("CNI_PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::IPAM,
                format!(
                    "failed to find IPAM plugin {name:?} in CNI_PATH {:?}",
                    std::env::var("CNI_PATH").unwrap_or_default()
                ),
            )
        })
}

/// Runs `plugin` with `CNI_COMMAND=command` and `stdin`; its stdout on success.
fn exec(plugin: &PathBuf, command: &str, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CniError::new(code::IPAM, format!("cannot run {}: {e}", plugin.display())))?;
    if let Some(mut i) = child.stdin.take() {
        // A plugin may exit without reading everything (VERSION): ignore EPIPE.
        let _ = i.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(code::IPAM, format!("waiting for {}: {e}", plugin.display())))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(
        CniError::from_plugin_output(&out.stdout).unwrap_or_else(|| {
            CniError::new(
                code::IPAM,
                format!(
                    "IPAM plugin {} {command} failed ({})",
                    plugin.display(),
                    out.status
                ),
            )
            .details(String::from_utf8_lossy(&out.stdout).into_owned())
        }),
    )
}

/// The versions the plugin says it supports.
pub fn versions(plugin: &PathBuf) -> Result<Vec<String>, CniError> {
    let out = exec(plugin, "VERSION", br#"{"cniVersion":"0.4.0"}"#)?;
    let v: Value = serde_json::from_slice(&out).map_err(|e| {
        CniError::new(code::IPAM, "IPAM plugin VERSION printed no JSON").details(e.to_string())
    })?;
    Ok(v.get("supportedVersions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// An IPAM plugin and the version to speak to it.
pub struct Ipam {
    pub path: PathBuf,
    pub version: String,
    pub supported: Vec<String>,
}

impl Ipam {
    /// The configured IPAM plugin, if any. Debian's `host-local` and `static` stop at
    /// 1.0.0: a request in 1.1.0 reaches them as 1.0.0 (the formats are the same).
    pub fn for_conf(conf: &NetConf) -> Result<Option<Self>, CniError> {
        let Some(name) = &conf.ipam_type else {
            return Ok(None);
        };
        let path = find(name)?;
        let (supported, version) = match versions(&path) {
            Ok(s) => {
                let v = negotiate(&conf.cni_version, &s).ok_or_else(|| {
                    CniError::new(
                        code::INCOMPATIBLE_VERSION,
                        format!(
                            "IPAM plugin {name:?} supports none of the versions this request can use (it supports {})",
                            s.join(", ")
                        ),
                    )
                })?;
                (s, v)
            }
            // No VERSION answer: try the request's version, capped at 1.0.0.
            Err(_) => {
                let v = if crate::cni::parse_version(&conf.cni_version)
                    .is_some_and(|p| p > (1, 0, 0))
                {
                    "1.0.0".to_string()
                } else {
                    conf.cni_version.clone()
                };
                (vec![], v)
            }
        };
        Ok(Some(Self {
            path,
            version,
            supported,
        }))
    }

    pub fn supports(&self, v: &str) -> bool {
        self.supported.iter().any(|s| s == v)
    }

    fn run(&self, conf: &NetConf, command: &str) -> Result<Vec<u8>, CniError> {
        let stdin =
            serde_json::to_vec(&conf.for_delegate(&self.version)).expect("a JSON value serialises");
        exec(&self.path, command, &stdin)
    }

    pub fn add(&self, conf: &NetConf) -> Result<CniResult, CniError> {
        let out = self.run(conf, "ADD")?;
        let v: Value = serde_json::from_slice(&out).map_err(|e| {
            CniError::new(code::IPAM, "IPAM plugin ADD printed no JSON result")
                .details(e.to_string())
        })?;
        CniResult::parse(&v)
    }

    pub fn del(&self, conf: &NetConf) -> Result<(), CniError> {
        self.run(conf, "DEL").map(drop)
    }

    pub fn check(&self, conf: &NetConf) -> Result<(), CniError> {
        self.run(conf, "CHECK").map(drop)
    }

    pub fn gc(&self, conf: &NetConf) -> Result<(), CniError> {
        self.run(conf, "GC").map(drop)
    }

    pub fn status(&self, conf: &NetConf) -> Result<(), CniError> {
        self.run(conf, "STATUS").map(drop)
    }
}

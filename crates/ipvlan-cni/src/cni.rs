//! The CNI protocol: versions, the network configuration, results in every supported
//! format, and error JSON (CNI spec 1.0.0, 1.1.0 for STATUS and GC, and the 0.3.x/0.4.0
//! result formats).

use std::net::IpAddr;

use ipvlan_core::{Flags, Mode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What `VERSION` reports.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version this plugin speaks (used when a request names none).
pub const LATEST: &str = "1.1.0";

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Spec error codes (1-99 are the spec's; 100+ are this plugin's).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (e.g. reading stdin).
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (the daemon cannot be reached).
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const NOT_AVAILABLE: u32 = 50;
    /// The ipvlan-rs daemon refused the request.
    pub const DAEMON: u32 = 100;
    /// A system call (netlink, namespace, sysctl) failed.
    pub const SYSTEM: u32 = 101;
    /// The IPAM plugin failed without a CNI error of its own, or was not found.
    pub const IPAM: u32 = 102;
    /// CHECK: the container's interface does not match `prevResult`.
    pub const CHECK_MISMATCH: u32 = 103;
    /// An address of the container is in use elsewhere: IPv6 duplicate address
    /// detection failed, or another slave of the master has it.
    pub const ADDRESS_IN_USE: u32 = 104;
}

/// A CNI error, printed as the spec's error JSON.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, d: impl Into<String>) -> Self {
        self.details = d.into();
        self
    }

    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    pub fn system(msg: impl Into<String>) -> Self {
        Self::new(code::SYSTEM, msg)
    }

    /// The error JSON object.
    pub fn to_json(&self, cni_version: &str) -> Value {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }

    /// Reads an error another plugin (IPAM) printed.
    pub fn from_plugin_output(out: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct E {
            code: u32,
            #[serde(default)]
            msg: String,
            #[serde(default)]
            details: String,
        }
        let e: E = serde_json::from_slice(out).ok()?;
        Some(Self {
            code: e.code,
            msg: e.msg,
            details: e.details,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Versions
// ---------------------------------------------------------------------------------------

/// A parsed `MAJOR.MINOR.PATCH`.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next().unwrap_or("0").parse().ok()?;
    let c = it.next().unwrap_or("0").parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

pub fn is_supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// Whether results of version `v` carry `ips[].version` (0.3.x, 0.4.0).
pub fn has_ip_version_field(v: &str) -> bool {
    parse_version(v).is_some_and(|p| p < (1, 0, 0))
}

/// The version to speak to a delegate that supports `theirs`, for a request in
/// `ours`: `ours` if they support it, else the newest of theirs not above ours (and not
/// below 0.3.0, the oldest result format this plugin reads).
pub fn negotiate(ours: &str, theirs: &[String]) -> Option<String> {
    if theirs.iter().any(|t| t == ours) {
        return Some(ours.to_string());
    }
    let want = parse_version(ours)?;
    theirs
        .iter()
        .filter_map(|t| parse_version(t).map(|p| (p, t)))
        .filter(|(p, _)| *p <= want && *p >= (0, 3, 0))
        .max_by_key(|(p, _)| *p)
        .map(|(_, t)| t.clone())
}

// ---------------------------------------------------------------------------------------
// Network configuration
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The network configuration as it arrives on stdin: the reference ipvlan plugin's
/// fields, plus the ipvlan-rs extensions `flag` and `sourceGuard`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawConf {
    pub cni_version: String,
    // `name` and `type` are the runtime's business; unknown fields are ignored.
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub link_in_container: bool,
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(default)]
    pub dns: Option<Dns>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// ipvlan-rs extension: the port flag, `bridge` (default), `private` or `vepa`.
    #[serde(default)]
    pub flag: Option<String>,
    /// ipvlan-rs extension: turn the port's source guard on (`true`) or off; absent
    /// leaves it as it is.
    #[serde(default)]
    pub source_guard: Option<bool>,
    /// ipvlan-rs extension: turn the port's host access on (`true`: the host and the
    /// containers reach each other) or off; absent leaves it as it is.
    #[serde(default)]
    pub host_access: Option<bool>,
}

/// The configuration, checked.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub cni_version: String,
    pub master: Option<String>,
    pub mode: Mode,
    pub flags: Option<Flags>,
    pub source_guard: Option<bool>,
    pub host_access: Option<bool>,
    pub mtu: Option<u32>,
    pub link_in_container: bool,
    /// The IPAM plugin's name (`ipam.type`), if IPAM is configured.
    pub ipam_type: Option<String>,
    pub dns: Option<Dns>,
    pub prev_result: Option<Value>,
    /// The whole configuration as received, for delegation.
    pub raw: Value,
}

/// The `cniVersion` of a configuration, as far as it can be read (for error JSON).
pub fn version_of(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

impl NetConf {
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(code::DECODE, "failed to decode the network configuration")
                .details(e.to_string())
        })?;
        if !raw.is_object() {
            return Err(CniError::new(
                code::DECODE,
                "the network configuration is not a JSON object",
            ));
        }
        let c: RawConf = serde_json::from_value(raw.clone()).map_err(|e| {
            CniError::new(code::DECODE, "failed to decode the network configuration")
                .details(e.to_string())
        })?;
        if !is_supported(&c.cni_version) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "incompatible CNI version {:?}: this plugin supports {}",
                    c.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let mode = match c.mode.as_deref() {
            None | Some("") => Mode::L2,
            Some(m) => m.parse().map_err(|_| {
                CniError::config(format!(
                    "unknown ipvlan mode {m:?}: expected \"l2\", \"l3\" or \"l3s\""
                ))
            })?,
        };
        let flags = match c.flag.as_deref() {
            None | Some("") => None,
            Some(f) => Some(f.parse().map_err(|_| {
                CniError::config(format!(
                    "unknown ipvlan flag {f:?}: expected \"bridge\", \"private\" or \"vepa\""
                ))
            })?),
        };
        if c.master
            .as_deref()
            .is_some_and(|m| m.len() > 15 || m.contains('/') || m.contains(char::is_whitespace))
        {
            return Err(CniError::config(format!(
                "invalid master interface name {:?}",
                c.master.as_deref().unwrap_or_default()
            )));
        }
        let ipam_type = match &c.ipam {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => match m.get("type") {
                None => None,
                Some(Value::String(t)) if t.is_empty() => None,
                Some(Value::String(t)) if t.contains('/') => {
                    return Err(CniError::config(format!(
                        "invalid IPAM plugin type {t:?}: a plugin name, not a path"
                    )));
                }
                Some(Value::String(t)) => Some(t.clone()),
                Some(_) => return Err(CniError::config("ipam.type must be a string")),
            },
            Some(_) => return Err(CniError::config("ipam must be an object")),
        };
        Ok(Self {
            cni_version: c.cni_version,
            master: c.master.filter(|m| !m.is_empty()),
            mode,
            flags,
            source_guard: c.source_guard,
            host_access: c.host_access,
            mtu: c.mtu.filter(|&m| m != 0),
            link_in_container: c.link_in_container,
            ipam_type,
            dns: c.dns.filter(|d| !d.is_empty()),
            prev_result: c.prev_result.filter(|p| !p.is_null()),
            raw,
        })
    }

    /// The configuration to hand to a delegate speaking `version`.
    pub fn for_delegate(&self, version: &str) -> Value {
        let mut v = self.raw.clone();
        if let Some(o) = v.as_object_mut() {
            o.insert("cniVersion".into(), Value::String(version.to_string()));
            // The previous result in that version's format, too.
            if let Some(prev) = o.get("prevResult").filter(|p| !p.is_null())
                && let Ok(r) = CniResult::parse(prev)
            {
                o.insert("prevResult".into(), r.to_json(version));
            }
        }
        v
    }
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address of a result (`ips[]`). `version` (0.3.x/0.4.0) is read and dropped; it
/// is written back when the output version needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `ADDRESS/PREFIX`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    pub fn addr(&self) -> Result<(IpAddr, u8), CniError> {
        parse_cidr(&self.address)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `NETWORK/PREFIX`.
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// 1.1 route fields (`mtu`, `advmss`, `priority`, `table`, `scope`), kept as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Route {
    pub fn priority(&self) -> Option<u32> {
        self.extra
            .get("priority")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
    }
    pub fn table(&self) -> Option<u32> {
        self.extra
            .get("table")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
    }
}

/// A result, independent of its version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a result of any supported version (0.3.0 .. 1.1.0).
    pub fn parse(v: &Value) -> Result<Self, CniError> {
        let r: CniResult = serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(code::DECODE, "failed to decode a CNI result").details(e.to_string())
        })?;
        if let Some(ver) = v.get("cniVersion").and_then(Value::as_str)
            && parse_version(ver).is_some_and(|p| p < (0, 3, 0))
        {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("result version {ver} is older than 0.3.0 and not supported"),
            ));
        }
        for ip in &r.ips {
            ip.addr()?;
        }
        for rt in &r.routes {
            parse_cidr(&rt.dst)?;
        }
        Ok(r)
    }

    /// The result in the format of `version`.
    pub fn to_json(&self, version: &str) -> Value {
        let mut r = self.clone();
        r.cni_version = version.to_string();
        let mut v = serde_json::to_value(&r).expect("a result serialises");
        if has_ip_version_field(version)
            && let Some(ips) = v.get_mut("ips").and_then(Value::as_array_mut)
        {
            for (ip, cfg) in ips.iter_mut().zip(&self.ips) {
                let fam = if cfg.address.contains(':') { "6" } else { "4" };
                if let Some(o) = ip.as_object_mut() {
                    o.insert("version".into(), Value::String(fam.into()));
                }
            }
        }
        v
    }
}

/// Parses `ADDRESS/PREFIX`.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), CniError> {
    let bad = || CniError::new(code::DECODE, format!("invalid CIDR address {s:?}"));
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok((ip, prefix))
}

/// The `VERSION` answer.
pub fn version_answer(requested: Option<&str>) -> Value {
    serde_json::json!({
        "cniVersion": requested.unwrap_or(LATEST),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn reference_config_parses_with_defaults() {
        let c = conf(
            r#"{"cniVersion":"1.0.0","name":"mynet","type":"ipvlan","master":"eth0",
                "ipam":{"type":"host-local","subnet":"10.1.2.0/24"}}"#,
        )
        .unwrap();
        assert_eq!(c.mode, Mode::L2);
        assert_eq!(c.flags, None);
        assert_eq!(c.master.as_deref(), Some("eth0"));
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        assert!(!c.link_in_container);
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn all_fields_and_extension() {
        let c = conf(
            r#"{"cniVersion":"0.4.0","name":"n","type":"ipvlan","master":"eth1","mode":"l3s",
                "mtu":1400,"linkInContainer":true,"flag":"private","sourceGuard":true,"hostAccess":true,
                "dns":{"nameservers":["10.0.0.53"]},"prevResult":{"cniVersion":"0.4.0"},
                "unknownField": 1}"#,
        )
        .unwrap();
        assert_eq!(c.mode, Mode::L3s);
        assert_eq!(c.flags, Some(Flags::Private));
        assert_eq!(c.source_guard, Some(true));
        assert_eq!(c.host_access, Some(true));
        assert_eq!(c.mtu, Some(1400));
        assert!(c.link_in_container);
        assert_eq!(c.ipam_type, None);
        assert_eq!(c.dns.unwrap().nameservers, vec!["10.0.0.53"]);
        assert!(c.prev_result.is_some());
    }

    #[test]
    fn empty_strings_mean_defaults() {
        let c = conf(
            r#"{"cniVersion":"1.1.0","name":"n","type":"ipvlan","master":"","mode":"","flag":"","ipam":{}}"#,
        )
        .unwrap();
        assert_eq!(c.master, None);
        assert_eq!(c.mode, Mode::L2);
        assert_eq!(c.ipam_type, None);
    }

    #[test]
    fn bad_configs_have_the_right_codes() {
        let e =
            conf(r#"{"cniVersion":"1.0.0","name":"n","type":"ipvlan","mode":"l4"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("l4"), "{e:?}");
        let e =
            conf(r#"{"cniVersion":"1.0.0","name":"n","type":"ipvlan","flag":"vpa"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e = conf(r#"{"cniVersion":"0.2.0","name":"n","type":"ipvlan"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = conf(r#"{"cniVersion":"1.0.0","name":"n""#).unwrap_err();
        assert_eq!(e.code, code::DECODE);
        let e = conf(r#"{"name":"n"}"#).unwrap_err();
        assert_eq!(e.code, code::DECODE);
        let e = conf(r#"{"cniVersion":"1.0.0","mtu":"big"}"#).unwrap_err();
        assert_eq!(e.code, code::DECODE);
        let e = conf(r#"{"cniVersion":"1.0.0","ipam":{"type":"/bin/sh"}}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e = conf(r#"{"cniVersion":"1.0.0","master":"a/b"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
    }

    #[test]
    fn delegate_config_changes_only_the_version() {
        let c = conf(
            r#"{"cniVersion":"1.1.0","name":"n","type":"ipvlan","ipam":{"type":"host-local"}}"#,
        )
        .unwrap();
        let d = c.for_delegate("1.0.0");
        assert_eq!(d["cniVersion"], "1.0.0");
        assert_eq!(d["ipam"]["type"], "host-local");
        assert_eq!(d["name"], "n");
        let c = conf(
            r#"{"cniVersion":"1.1.0","name":"n","type":"ipvlan","ipam":{"type":"host-local"},
                "prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.2/24","interface":0}]}}"#,
        )
        .unwrap();
        let d = c.for_delegate("0.4.0");
        assert_eq!(d["prevResult"]["cniVersion"], "0.4.0");
        assert_eq!(d["prevResult"]["ips"][0]["version"], "4");
    }

    #[test]
    fn negotiation() {
        let debian: Vec<String> = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
            .map(String::from)
            .to_vec();
        assert_eq!(negotiate("1.1.0", &debian).as_deref(), Some("1.0.0"));
        assert_eq!(negotiate("1.0.0", &debian).as_deref(), Some("1.0.0"));
        assert_eq!(negotiate("0.3.1", &debian).as_deref(), Some("0.3.1"));
        assert_eq!(negotiate("0.3.1", &["0.2.0".to_string()]), None);
        assert_eq!(
            negotiate("1.1.0", &["1.1.0".to_string()]).as_deref(),
            Some("1.1.0")
        );
    }

    #[test]
    fn result_conversion_between_versions() {
        let old = serde_json::json!({
            "cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "10.1.2.10/24", "gateway": "10.1.2.1"},
                    {"version": "6", "address": "fd00::10/64"}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.2.254", "priority": 5}],
            "dns": {}
        });
        let mut r = CniResult::parse(&old).unwrap();
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.routes[1].priority(), Some(5));
        r.interfaces.push(Interface {
            name: "eth0".into(),
            mac: Some("02:00:00:00:00:01".into()),
            mtu: None,
            sandbox: Some("/run/netns/x".into()),
        });
        for ip in &mut r.ips {
            ip.interface = Some(0);
        }
        let v1 = r.to_json("1.0.0");
        assert_eq!(v1["cniVersion"], "1.0.0");
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["ips"][0]["interface"], 0);
        assert_eq!(v1["ips"][0]["gateway"], "10.1.2.1");
        assert_eq!(v1["interfaces"][0]["sandbox"], "/run/netns/x");
        assert_eq!(v1["routes"][1]["priority"], 5);
        assert!(v1.get("dns").is_none());
        let v03 = r.to_json("0.3.1");
        assert_eq!(v03["ips"][0]["version"], "4");
        assert_eq!(v03["ips"][1]["version"], "6");
        // Round trip.
        assert_eq!(CniResult::parse(&v1).unwrap().ips, r.ips);
        assert_eq!(CniResult::parse(&v03).unwrap().routes, r.routes);
    }

    #[test]
    fn bad_results_are_refused() {
        let e = CniResult::parse(&serde_json::json!({"ips":[{"address":"10.0.0.1"}]})).unwrap_err();
        assert_eq!(e.code, code::DECODE);
        let e = CniResult::parse(&serde_json::json!({"cniVersion":"0.2.0"})).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn error_json_shape() {
        let e = CniError::config("bad mode").details("mode l4");
        let v = e.to_json("1.0.0");
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.0.0","code":7,"msg":"bad mode","details":"mode l4"})
        );
        let back = CniError::from_plugin_output(v.to_string().as_bytes()).unwrap();
        assert_eq!(back, e);
        assert!(CniError::from_plugin_output(b"garbage").is_none());
    }

    #[test]
    fn version_answer_lists_everything() {
        let v = version_answer(Some("1.0.0"));
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        assert_eq!(version_answer(None)["cniVersion"], LATEST);
    }

    #[test]
    fn cidr() {
        assert_eq!(
            parse_cidr("10.0.0.1/24").unwrap(),
            ("10.0.0.1".parse().unwrap(), 24)
        );
        assert!(parse_cidr("10.0.0.1/33").is_err());
        assert!(parse_cidr("fd00::1/129").is_err());
        assert!(parse_cidr("fd00::1/64").is_ok());
    }
}

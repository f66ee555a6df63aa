//! The plugin's own record of its networks and endpoints: Docker does not replay remote
//! networks to a plugin after a restart, so they are kept in one JSON file in a state
//! directory, rewritten whole (write, fsync, rename) after every change.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use ipvlan_core::{Flags, Mode};
use serde::{Deserialize, Serialize};

pub const DEFAULT_DIR: &str = "/var/lib/ipvlan-rs/docker";
const FILE: &str = "state.json";

/// One pool of a network: `pool` and `gateway` as Docker's IPAM gave them (CIDR
/// strings; `gateway` empty when there is none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub pool: String,
    pub gateway: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// IPAM's addresses for it, CIDR strings, empty if none of that family.
    pub addr: String,
    pub addr_v6: String,
    /// The slave made for it at Join (in the plugin's namespace until Docker moves it).
    pub src_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub parent: String,
    pub mode: Mode,
    pub flags: Flags,
    /// `-o ipvlan_host_access=on` (an ipvlan-rs extension).
    #[serde(default)]
    pub host_access: bool,
    pub internal: bool,
    /// The plugin made the parent (a dummy link, or a VLAN link `eth0.10`) and removes
    /// it with the network.
    pub created_parent: bool,
    pub ipv4: Vec<Subnet>,
    pub ipv6: Vec<Subnet>,
    pub endpoints: BTreeMap<String, Endpoint>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub networks: BTreeMap<String, Network>,
}

#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The saved state, or an empty one if nothing was saved yet.
    pub fn load(&self) -> Result<State, String> {
        let path = self.dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a state file of ours: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn save(&self, state: &State) -> Result<(), String> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(state)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| format!("saving the plugin state to {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("ipvlan-docker-store-{}", std::process::id()));
        let store = Store::new(&dir);
        assert_eq!(store.load().unwrap(), State::default());
        let mut state = State::default();
        state.networks.insert(
            "n1".into(),
            Network {
                parent: "eth0".into(),
                mode: Mode::L3,
                flags: Flags::Private,
                host_access: true,
                internal: false,
                created_parent: false,
                ipv4: vec![Subnet {
                    pool: "10.1.0.0/24".into(),
                    gateway: "10.1.0.1/24".into(),
                }],
                ipv6: vec![],
                endpoints: [(
                    "e1".to_string(),
                    Endpoint {
                        addr: "10.1.0.2/24".into(),
                        addr_v6: String::new(),
                        src_name: "ipvde1".into(),
                    },
                )]
                .into(),
            },
        );
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The network driver: Docker's calls answered as Docker's own ipvlan driver answers them
//! (its options, checks, error texts, gateways and routes), with the slaves made by the
//! ipvlan-rs daemon, and every network and endpoint kept in the [`Store`].

use std::net::IpAddr;
use std::sync::Mutex;

use ipvlan_core::{Flags, Mode};
use ipvlan_sys::NetNs;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{self, JoinResponse};
use crate::control;
use crate::parent;
use crate::store::{Endpoint, Network, State, Store, Subnet};

/// Prefix of the slaves made at Join (then `eth<N>` in the container).
const SLAVE_PREFIX: &str = "ipvd";

pub struct Driver {
    /// The plugin's own namespace (dockerd's): parents and new slaves live here.
    ns: NetNs,
    store: Store,
    state: Mutex<State>,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}").map_err(|e| e.to_string());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))
}

/// `10.1.0.5/24` → (10.1.0.5, 24).
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= if ip.is_ipv4() { 32 } else { 128 }).then_some((ip, len))
}

fn masked(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// The subnet of `subnets` that holds address `addr` (same prefix length, as Docker's
/// driver matches them).
fn subnet_of<'a>(subnets: &'a [Subnet], addr: &str) -> Option<&'a Subnet> {
    let (ip, len) = parse_cidr(addr)?;
    subnets.iter().find(|s| {
        parse_cidr(&s.pool)
            .is_some_and(|(net, plen)| plen == len && masked(net, plen) == masked(ip, len))
    })
}

fn option_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn truthy(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The network's configuration from CreateNetwork's options, checked as Docker's
/// driver checks it (before anything is made).
fn network_config(req: &api::CreateNetwork) -> Result<Network, String> {
    let options = req.options.clone().unwrap_or_default();
    let generic = options
        .get(api::LABEL_GENERIC)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let opt = |k: &str| generic.get(k).map(option_str).unwrap_or_default();

    let ipv4: Vec<Subnet> = req
        .ipv4_data
        .iter()
        .flatten()
        .map(|d| Subnet {
            pool: d.pool.clone(),
            gateway: d.gateway.clone(),
        })
        .collect();
    let ipv6: Vec<Subnet> = req
        .ipv6_data
        .iter()
        .flatten()
        .map(|d| Subnet {
            pool: d.pool.clone(),
            gateway: d.gateway.clone(),
        })
        .collect();
    let ipv4_wanted = truthy(options.get(api::LABEL_ENABLE_IPV4)).unwrap_or(true);
    if ipv4_wanted && ipv4.first().is_none_or(|s| s.pool == "0.0.0.0/0") {
        return Err("ipv4 pool is empty".into());
    }

    let mode = match opt(api::OPT_MODE).as_str() {
        "" | "l2" => Mode::L2,
        "l3" => Mode::L3,
        "l3s" => Mode::L3s,
        other => {
            return Err(format!(
                "requested ipvlan mode '{other}' is not valid, 'l2' mode is the ipvlan driver default"
            ));
        }
    };
    let flags = match opt(api::OPT_FLAG).as_str() {
        "" | "bridge" => Flags::Bridge,
        "private" => Flags::Private,
        "vepa" => Flags::Vepa,
        other => {
            return Err(format!(
                "requested ipvlan flag '{other}' is not valid, 'bridge' is the ipvlan driver default"
            ));
        }
    };
    let host_access = match opt(api::OPT_HOST_ACCESS).as_str() {
        "" | "off" => false,
        "on" => true,
        other => {
            return Err(format!(
                "requested ipvlan_host_access '{other}' is not valid: 'on' or 'off' (the default)"
            ));
        }
    };
    let mut parent = opt(api::OPT_PARENT);
    let mut internal = truthy(options.get(api::LABEL_INTERNAL)).unwrap_or(false);
    if parent == "lo" {
        return Err("loopback interface is not a valid ipvlan parent link".into());
    }
    if parent.is_empty() {
        // No parent: a dummy link of the network's own, and no way out.
        parent = parent::dummy_name(&req.network_id);
        internal = true;
    }
    Ok(Network {
        parent,
        mode,
        flags,
        host_access,
        internal,
        created_parent: false,
        ipv4,
        ipv6,
        endpoints: Default::default(),
    })
}

impl Driver {
    pub fn new(store: Store) -> Result<Self, String> {
        let state = store.load()?;
        let ns = NetNs::current().map_err(|e| format!("opening our own namespace: {e}"))?;
        Ok(Self {
            ns,
            store,
            state: Mutex::new(state),
        })
    }

    pub fn networks(&self) -> usize {
        self.lock().networks.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers `POST /<call>` with body `body`: the JSON answer, or the text of an `Err`.
    pub fn handle(&self, call: &str, body: &[u8]) -> Result<Value, String> {
        match call {
            "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver"] })),
            "NetworkDriver.GetCapabilities" => {
                Ok(json!({ "Scope": "local", "ConnectivityScope": "global" }))
            }
            "NetworkDriver.CreateNetwork" => self.create_network(&parse(body)?),
            "NetworkDriver.DeleteNetwork" => {
                self.delete_network(&parse::<api::NetworkRef>(body)?.network_id)
            }
            "NetworkDriver.CreateEndpoint" => self.create_endpoint(&parse(body)?),
            "NetworkDriver.DeleteEndpoint" => self.delete_endpoint(&parse(body)?),
            "NetworkDriver.EndpointOperInfo" => Ok(json!({ "Value": {} })),
            "NetworkDriver.Join" => self.join(&parse(body)?),
            // ProgramExternalConnectivity comes before Docker has moved the slave into
            // the container (it does that in the container's prestart hook): there is
            // nothing to wait for there.
            "NetworkDriver.Leave"
            | "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity"
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete"
            | "NetworkDriver.AllocateNetwork"
            | "NetworkDriver.FreeNetwork" => Ok(json!({})),
            other => Err(format!("ipvlan-rs: unknown call {other}")),
        }
    }

    fn save(&self, state: &State) -> Result<(), String> {
        self.store.save(state)
    }

    fn create_network(&self, req: &api::CreateNetwork) -> Result<Value, String> {
        let mut config = network_config(req)?;
        let mut state = self.lock();
        if let Some(existing) = state.networks.get(&req.network_id) {
            // Docker may create a network again (its restore): the record stands.
            return if existing.parent == config.parent {
                Ok(json!({}))
            } else {
                Err(format!(
                    "network {} already exists with parent interface {}",
                    parent::short_id(&req.network_id),
                    existing.parent
                ))
            };
        }
        if let Some((other, _)) = state
            .networks
            .iter()
            .find(|(_, n)| n.parent == config.parent)
        {
            return Err(format!(
                "network {} is already using parent interface {}",
                parent::dummy_name(other),
                config.parent
            ));
        }
        if !parent::exists(&config.parent)? {
            if config.parent == parent::dummy_name(&req.network_id) {
                parent::create_dummy(&config.parent)?;
            } else if config.parent.contains('.') {
                parent::create_vlan(&config.parent)?;
            } else {
                return Err(parent::not_found(&config.parent));
            }
            config.created_parent = true;
        }
        let parent_name = config.parent.clone();
        let created = config.created_parent;
        state.networks.insert(req.network_id.clone(), config);
        if let Err(e) = self.save(&state) {
            state.networks.remove(&req.network_id);
            if created && let Err(u) = parent::delete(&parent_name) {
                eprintln!("ipvlan-docker: undoing parent {parent_name}: {u}");
            }
            return Err(e);
        }
        Ok(json!({}))
    }

    fn delete_network(&self, id: &str) -> Result<Value, String> {
        let mut state = self.lock();
        let Some(net) = state.networks.get(id).cloned() else {
            // Unknown (state lost or already deleted): nothing of ours to remove, and
            // Docker must be able to forget it.
            eprintln!("ipvlan-docker: DeleteNetwork {id}: no such network, nothing to do");
            return Ok(json!({}));
        };
        for ep in net.endpoints.values() {
            self.remove_slave(&ep.src_name);
        }
        if net.created_parent
            && let Err(e) = parent::delete(&net.parent)
        {
            eprintln!("ipvlan-docker: deleting parent {}: {e}", net.parent);
        }
        state.networks.remove(id);
        self.save(&state)?;
        Ok(json!({}))
    }

    fn create_endpoint(&self, req: &api::CreateEndpoint) -> Result<Value, String> {
        let iface = req.interface.clone().unwrap_or_default();
        if !iface.mac_address.is_empty() {
            return Err("ipvlan interfaces do not support custom mac address assignment".into());
        }
        let mut state = self.lock();
        let net = state
            .networks
            .get_mut(&req.network_id)
            .ok_or_else(|| format!("network id {} not found", req.network_id))?;
        if !iface.address.is_empty() && parse_cidr(&iface.address).is_none() {
            return Err(format!("invalid endpoint address {}", iface.address));
        }
        net.endpoints.insert(
            req.endpoint_id.clone(),
            Endpoint {
                addr: iface.address,
                addr_v6: iface.address_ipv6,
                src_name: slave_name(&req.endpoint_id),
            },
        );
        self.save(&state)?;
        Ok(json!({}))
    }

    fn delete_endpoint(&self, req: &api::EndpointRef) -> Result<Value, String> {
        let mut state = self.lock();
        let name = match state
            .networks
            .get_mut(&req.network_id)
            .and_then(|n| n.endpoints.remove(&req.endpoint_id))
        {
            Some(ep) => ep.src_name,
            None => slave_name(&req.endpoint_id),
        };
        self.remove_slave(&name);
        self.save(&state)?;
        Ok(json!({}))
    }

    /// Removes slave `name` if it is in our namespace (Docker moves it back here under
    /// this name when the container's sandbox goes): through the daemon, or with
    /// netlink when the daemon cannot.
    fn remove_slave(&self, name: &str) {
        match parent::exists(name) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                eprintln!("ipvlan-docker: {e}");
                return;
            }
        }
        if let Err(e) = control::del_slave(&self.ns, name) {
            eprintln!("ipvlan-docker: {e}; deleting {name} with netlink");
            if let Err(e) = parent::delete(name) {
                eprintln!("ipvlan-docker: {e}");
            }
        }
    }

    fn join(&self, req: &api::EndpointRef) -> Result<Value, String> {
        let state = self.lock();
        let net = state
            .networks
            .get(&req.network_id)
            .ok_or_else(|| format!("network id {} not found", req.network_id))?;
        let ep = net
            .endpoints
            .get(&req.endpoint_id)
            .ok_or_else(|| format!("could not find endpoint with id {}", req.endpoint_id))?;
        // A slave left over from an earlier, interrupted Join of this endpoint.
        self.remove_slave(&ep.src_name);
        control::add_slave(
            &self.ns,
            &net.parent,
            &ep.src_name,
            net.mode,
            net.flags,
            net.host_access,
        )?;

        let mut answer = JoinResponse {
            interface_name: api::InterfaceName {
                src_name: ep.src_name.clone(),
                dst_prefix: "eth".into(),
            },
            gateway: String::new(),
            gateway_ipv6: String::new(),
            static_routes: vec![],
            disable_gateway_service: false,
        };
        if !net.internal {
            match net.mode {
                Mode::L3 | Mode::L3s => {
                    // A connected default route (`default dev eth0`), any gateway ignored.
                    answer.disable_gateway_service = true;
                    let mut route = |dst: &str| {
                        answer.static_routes.push(api::StaticRoute {
                            destination: dst.into(),
                            route_type: api::ROUTE_CONNECTED,
                            next_hop: String::new(),
                        })
                    };
                    if !ep.addr.is_empty() {
                        route("0.0.0.0/0");
                    }
                    if !ep.addr_v6.is_empty() {
                        route("::/0");
                    }
                }
                Mode::L2 => {
                    let gw = |subnets: &[Subnet], addr: &str, family: &str| {
                        if subnets.is_empty() || addr.is_empty() {
                            return Ok(String::new());
                        }
                        let s = subnet_of(subnets, addr).ok_or_else(|| {
                            format!(
                                "could not find a valid {family} subnet for endpoint {}",
                                req.endpoint_id
                            )
                        })?;
                        Ok::<_, String>(
                            s.gateway
                                .split_once('/')
                                .map_or(s.gateway.as_str(), |(ip, _)| ip)
                                .to_string(),
                        )
                    };
                    answer.gateway = gw(&net.ipv4, &ep.addr, "ipv4")?;
                    answer.gateway_ipv6 = gw(&net.ipv6, &ep.addr_v6, "ipv6")?;
                }
            }
        }
        serde_json::to_value(&answer).map_err(|e| e.to_string())
    }
}

/// The slave of endpoint `id` while it is in the plugin's namespace: `ipvd` and the
/// endpoint ID's first 11 characters (15 in all, the kernel's limit).
fn slave_name(endpoint_id: &str) -> String {
    format!(
        "{SLAVE_PREFIX}{}",
        &endpoint_id[..endpoint_id.len().min(15 - SLAVE_PREFIX.len())]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(id: &str, generic: Value, v4: Value, v6: Value) -> api::CreateNetwork {
        serde_json::from_value(json!({
            "NetworkID": id,
            "Options": { "com.docker.network.generic": generic, "com.docker.network.enable_ipv6": !v6.is_null() },
            "IPv4Data": v4,
            "IPv6Data": v6,
        }))
        .unwrap()
    }

    fn pool4() -> Value {
        json!([{ "AddressSpace": "LocalDefault", "Pool": "10.9.0.0/24", "Gateway": "10.9.0.1/24" }])
    }

    #[test]
    fn options_and_their_errors() {
        let id = "0123456789abcdef0123";
        let c =
            network_config(&create(id, json!({"parent": "eth0"}), pool4(), Value::Null)).unwrap();
        assert_eq!(
            (c.mode, c.flags, c.internal),
            (Mode::L2, Flags::Bridge, false)
        );
        let c = network_config(&create(
            id,
            json!({"parent": "eth0", "ipvlan_mode": "l3s", "ipvlan_flag": "vepa"}),
            pool4(),
            Value::Null,
        ))
        .unwrap();
        assert_eq!((c.mode, c.flags), (Mode::L3s, Flags::Vepa));
        assert!(!c.host_access);
        let c = network_config(&create(
            id,
            json!({"parent": "eth0", "ipvlan_host_access": "on"}),
            pool4(),
            Value::Null,
        ))
        .unwrap();
        assert!(c.host_access);

        let err =
            |g: Value, v4: Value| network_config(&create(id, g, v4, Value::Null)).unwrap_err();
        assert_eq!(
            err(json!({"parent": "eth0", "ipvlan_mode": "l4"}), pool4()),
            "requested ipvlan mode 'l4' is not valid, 'l2' mode is the ipvlan driver default"
        );
        assert_eq!(
            err(json!({"parent": "eth0", "ipvlan_flag": "open"}), pool4()),
            "requested ipvlan flag 'open' is not valid, 'bridge' is the ipvlan driver default"
        );
        assert_eq!(
            err(
                json!({"parent": "eth0", "ipvlan_host_access": "yes"}),
                pool4()
            ),
            "requested ipvlan_host_access 'yes' is not valid: 'on' or 'off' (the default)"
        );
        assert_eq!(
            err(json!({"parent": "lo"}), pool4()),
            "loopback interface is not a valid ipvlan parent link"
        );
        assert_eq!(
            err(json!({"parent": "eth0"}), json!([])),
            "ipv4 pool is empty"
        );

        let c = network_config(&create(id, json!({}), pool4(), Value::Null)).unwrap();
        assert_eq!(c.parent, "di-0123456789ab");
        assert!(c.internal);
    }

    #[test]
    fn gateways_by_subnet() {
        let subnets = vec![
            Subnet {
                pool: "10.9.0.0/24".into(),
                gateway: "10.9.0.1/24".into(),
            },
            Subnet {
                pool: "10.8.0.0/16".into(),
                gateway: "10.8.0.254/16".into(),
            },
        ];
        assert_eq!(
            subnet_of(&subnets, "10.8.3.4/16").unwrap().gateway,
            "10.8.0.254/16"
        );
        assert_eq!(
            subnet_of(&subnets, "10.9.0.7/24").unwrap().pool,
            "10.9.0.0/24"
        );
        assert!(subnet_of(&subnets, "10.7.0.7/24").is_none());
        let v6 = vec![Subnet {
            pool: "fd00:9::/64".into(),
            gateway: "fd00:9::1/64".into(),
        }];
        assert!(subnet_of(&v6, "fd00:9::5/64").is_some());
    }

    #[test]
    fn slave_names_fit() {
        let n = slave_name("3f1e9c0b2a7d4e5f60718293a4b5c6d7e8f9");
        assert_eq!(n, "ipvd3f1e9c0b2a7");
        assert_eq!(n.len(), 15);
    }
}

//! Docker's remote network driver protocol (libnetwork's `drivers/remote/api`): the JSON
//! bodies of the calls this plugin answers, with Docker's field names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a remote driver's calls go: `POST /NetworkDriver.<Call>`.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// The driver options Docker's own ipvlan driver takes (`-o NAME=VALUE`).
pub const OPT_PARENT: &str = "parent";
pub const OPT_MODE: &str = "ipvlan_mode";
pub const OPT_FLAG: &str = "ipvlan_flag";
/// An ipvlan-rs extension: `on` lets the host and the network's containers reach each
/// other (`host_access on`); `off` (the default) keeps them apart, as Docker's driver.
pub const OPT_HOST_ACCESS: &str = "ipvlan_host_access";
/// Top-level keys of `Options` (libnetwork's `netlabel`).
pub const LABEL_GENERIC: &str = "com.docker.network.generic";
pub const LABEL_INTERNAL: &str = "com.docker.network.internal";
pub const LABEL_ENABLE_IPV4: &str = "com.docker.network.enable_ipv4";

/// One pool of Docker's IPAM: addresses as CIDR strings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options")]
    pub options: Option<Map<String, Value>>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// The addresses Docker's IPAM chose for an endpoint (CIDR strings; empty if none).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    pub mac_address: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface")]
    pub interface: Option<EndpointInterface>,
}

/// DeleteEndpoint, Leave, EndpointOperInfo, Join (its other fields are not used here).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

/// libnetwork's route types: 0 through a next hop, 1 connected.
pub const ROUTE_CONNECTED: u8 = 1;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaticRoute {
    pub destination: String,
    pub route_type: u8,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
    pub disable_gateway_service: bool,
}

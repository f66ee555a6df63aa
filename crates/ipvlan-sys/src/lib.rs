//! Every system call ipvlan-rs makes, and the only `unsafe` in the project.
//!
//! * [`netns`]: network namespaces as file descriptors, and running code inside one.
//! * [`netlink`]: the netlink socket of every family, and its framing.
//! * [`rtnl`]: rtnetlink requests (links, addresses, routes, namespace ids) and event monitors.
//! * [`packet`]: AF_PACKET sockets with virtio-net headers, bound to one device.
//! * [`nft`]: applying an nftables script atomically inside a namespace.

pub mod bpf;
pub mod mem;
pub mod netlink;
pub mod netns;
pub mod nfqueue;
pub mod nft;
pub mod packet;
pub mod raw;
pub mod rtnl;
mod sock;
pub mod unix;

pub use netns::{NetNs, NsKey};

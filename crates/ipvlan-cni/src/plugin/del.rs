//! DEL: the IPAM allocation released, then the slave removed; succeeds when things are
//! already gone.

use ipvlan_sys::NetNs;

use super::{Env, remove_link};
use crate::cni::{CniError, NetConf};
use crate::ipam::Ipam;

pub fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    if let Some(i) = Ipam::for_conf(conf)? {
        i.del(conf)?;
    }
    if env.netns.is_empty() {
        return Ok(());
    }
    let target = match NetNs::open(&env.netns) {
        Ok(ns) => ns,
        // Already gone: so is the interface (deleting a namespace deletes its veths).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(CniError::system(format!(
                "CNI_NETNS {:?}: cannot open: {e}",
                env.netns
            )));
        }
    };
    if target.run(|| ()).is_err() {
        // A stale mount point or plain file: no namespace, nothing left to delete.
        return Ok(());
    }
    remove_link(&target, &env.ifname)
}

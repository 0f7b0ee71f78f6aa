//! Which links are terway's to delete, rename or move.
//!
//! A name proves nothing: `eth0` in a namespace may be the node's uplink (a veth on many VMs, and in the lab)
//! or another plugin's interface, and deleting it because it is in the way cuts the node or a pod off. So:
//! - a **pod-side** link (the pod's veth end, its ipvlan slave, `veth1` of an exclusive ENI) is ours only when
//!   it carries the `ifalias` [`pod_if_alias`]`(container id)`, which setup sets in the same RTM_SETLINK that
//!   brings the link up (no extra kernel round trip);
//! - a **host-side** veth is ours when it is a veth with the pod's derived name (`cali` + sha1 of the pod):
//!   that name is how a new sandbox of the same pod, or a DEL without the netns, finds it;
//! - an exclusive ENI is ours by the MAC the daemon assigned, and remembers its host name in its alias.
//!
//! Setup refuses ([`Error::ForeignLink`]) when a link that is not ours holds a name it needs; teardown leaves
//! such a link alone.

use crate::error::{Error, Result};
use crate::link::{self, Link, LinkUpdate};
use crate::nl::Netlink;

use super::PodCtx;

/// Prefix of the `ifalias` terway gives every pod-side link it creates.
pub const POD_IF_ALIAS_PREFIX: &str = "terway-pod:";

/// The `ifalias` of a pod-side link created for sandbox `container_id`.
pub fn pod_if_alias(container_id: &str) -> String {
    // IFALIASZ is 256 bytes including the NUL.
    let mut a = format!("{POD_IF_ALIAS_PREFIX}{container_id}");
    a.truncate(255);
    a
}

/// Whether `l` is a pod-side link terway created for sandbox `container_id`.
pub fn is_pod_link_of(l: &Link, container_id: &str) -> bool {
    l.alias.as_deref() == Some(pod_if_alias(container_id).as_str())
}

fn foreign(nl: &Netlink, name: &str, container_id: &str) -> Error {
    Error::ForeignLink {
        name: name.to_string(),
        namespace: nl.namespace().to_string(),
        container_id: container_id.to_string(),
    }
}

/// Mark the pod-side link `index` as created for `container_id` and bring it up (one RTM_SETLINK).
pub(crate) async fn claim_and_up(nl: &Netlink, index: u32, container_id: &str) -> Result<()> {
    link::update_link(
        nl,
        index,
        &LinkUpdate {
            up: Some(true),
            alias: Some(pod_if_alias(container_id)),
            ..Default::default()
        },
    )
    .await
}

/// Free `name` in the pod namespace for a link about to be created: an earlier link of ours is deleted, a
/// link that is not ours is an [`Error::ForeignLink`] and stays.
pub(crate) async fn free_pod_name(pod: &PodCtx, name: &str, container_id: &str) -> Result<()> {
    match link::link_by_name(&pod.nl, name).await? {
        None => Ok(()),
        Some(l) if is_pod_link_of(&l, container_id) => link::remove_link(&pod.nl, l.index).await,
        Some(_) => Err(foreign(&pod.nl, name, container_id)),
    }
}

/// Delete the pod link `name` if it is ours; returns whether it was. Anything else of that name stays.
pub async fn remove_own_pod_link(pod: &PodCtx, name: &str, container_id: &str) -> Result<bool> {
    match link::link_by_name(&pod.nl, name).await? {
        Some(l) if is_pod_link_of(&l, container_id) => {
            link::remove_link(&pod.nl, l.index).await.map(|_| true)
        }
        Some(l) => {
            tracing::info!(
                "leaving {name} (ifindex {}, alias {:?}) in {} alone: not created by terway for container {container_id}",
                l.index,
                l.alias,
                pod.nl.namespace()
            );
            Ok(false)
        }
        None => Ok(false),
    }
}

/// The host veth called `name`, if that name is held by a veth (anything else with it is not ours).
pub async fn host_veth(nl: &Netlink, name: &str) -> Result<Option<Link>> {
    Ok(link::link_by_name(nl, name)
        .await?
        .filter(|l| l.kind.as_deref() == Some("veth")))
}

/// Free the host veth name `name` for a new pair: a veth of that name (an earlier sandbox of the same pod)
/// is deleted, any other link holding it is an [`Error::ForeignLink`] and stays.
pub(crate) async fn free_host_veth_name(
    nl: &Netlink,
    name: &str,
    container_id: &str,
) -> Result<()> {
    match link::link_by_name(nl, name).await? {
        None => Ok(()),
        Some(l) if l.kind.as_deref() == Some("veth") => link::remove_link(nl, l.index).await,
        Some(_) => Err(foreign(nl, name, container_id)),
    }
}

/// Delete the host veth `name` if that name is held by a veth; returns whether one was deleted.
pub async fn remove_host_veth(nl: &Netlink, name: &str) -> Result<bool> {
    match host_veth(nl, name).await? {
        Some(l) => link::remove_link(nl, l.index).await.map(|_| true),
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_with(alias: Option<&str>) -> Link {
        Link {
            index: 3,
            name: "eth0".into(),
            mac: None,
            mtu: 1500,
            up: true,
            noarp: false,
            oper_up: true,
            kind: Some("veth".into()),
            alias: alias.map(str::to_string),
            parent_index: None,
        }
    }

    #[test]
    fn only_our_alias_for_this_container_counts() {
        assert!(is_pod_link_of(&link_with(Some("terway-pod:abc")), "abc"));
        assert!(!is_pod_link_of(&link_with(Some("terway-pod:abd")), "abc"));
        assert!(!is_pod_link_of(&link_with(Some("terway-pod:abcd")), "abc"));
        assert!(!is_pod_link_of(&link_with(None), "abc"));
        assert!(!is_pod_link_of(&link_with(Some("uplink")), "abc"));
        assert!(pod_if_alias(&"c".repeat(400)).len() <= 255);
    }
}

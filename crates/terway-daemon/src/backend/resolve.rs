//! Which backend serves a pod: a pure function of the pod's metadata and the backends the node has.
//!
//! A pod of a PodNetworking (`k8s.aliyun.com/pod-networking`, set by the controlplane's webhook) is
//! served by the ENI the controlplane made for it (its PodENI); a pod that asks for an ENI of its own
//! without one (`k8s.aliyun.com/pod-eni: "true"`) by the node's exclusive ENI pool; every other pod by
//! the node's default. A pod whose request the node cannot serve is refused with what to do, never
//! silently given another kind of network.

use terway_core::annotations;

use crate::podsource::PodMeta;
use crate::record::ResourceKind;

/// What the resolver needs to know about the node.
#[derive(Debug, Clone)]
pub struct NodeBackends {
    /// Node name, for messages.
    pub node: String,
    /// The kind serving pods that ask for nothing else.
    pub default: ResourceKind,
    /// Every kind registered.
    pub available: Vec<ResourceKind>,
}

/// Why a pod cannot be served on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unservable(pub String);

/// The backend for a pod with metadata `meta` (unknown pods get the default).
pub fn resolve(meta: Option<&PodMeta>, node: &NodeBackends) -> Result<ResourceKind, Unservable> {
    let Some(meta) = meta else {
        return Ok(node.default);
    };
    if let Some(networking) = meta
        .annotations
        .get(annotations::POD_NETWORKING)
        .filter(|v| !v.is_empty())
    {
        if node.available.contains(&ResourceKind::PodEni) {
            return Ok(ResourceKind::PodEni);
        }
        return Err(Unservable(format!(
            "pod {}/{} is in PodNetworking {networking}, whose ENIs the controlplane makes (PodENI), \
             but terwayd on node {} does not read PodENIs; run terwayd with the API server \
             (--in-cluster or --kubeconfig)",
            meta.namespace, meta.name, node.node
        )));
    }
    let wants_own_eni = meta
        .annotations
        .get(annotations::POD_ENI)
        .is_some_and(|v| v == "true");
    let kind = if wants_own_eni {
        ResourceKind::ExclusiveEni
    } else {
        node.default
    };
    if node.available.contains(&kind) {
        return Ok(kind);
    }
    let have: Vec<&str> = node.available.iter().map(|k| k.label()).collect();
    Err(Unservable(format!(
        "pod {}/{} asks for an ENI of its own ({}) but node {} serves only {}; \
         schedule it onto an exclusive-ENI node (label {}=eniOnly) or remove the annotation",
        meta.namespace,
        meta.name,
        annotations::POD_ENI,
        node.node,
        have.join(", "),
        annotations::LABEL_EXCLUSIVE_MODE_ENI_TYPE,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(default: ResourceKind, available: &[ResourceKind]) -> NodeBackends {
        NodeBackends {
            node: "node-1".into(),
            default,
            available: available.to_vec(),
        }
    }

    fn pod(annotations: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            namespace: "ns".into(),
            name: "p".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn ordinary_and_unknown_pods_get_the_default() {
        for k in [
            ResourceKind::SharedIp,
            ResourceKind::ExclusiveEni,
            ResourceKind::PodCidr,
        ] {
            let n = node(k, &[k]);
            assert_eq!(resolve(None, &n), Ok(k));
            assert_eq!(resolve(Some(&pod(&[])), &n), Ok(k));
            assert_eq!(
                resolve(Some(&pod(&[(annotations::POD_ENI, "false")])), &n),
                Ok(k)
            );
        }
    }

    #[test]
    fn a_pod_asking_for_its_own_eni_gets_one_where_the_node_has_them() {
        let n = node(
            ResourceKind::SharedIp,
            &[ResourceKind::SharedIp, ResourceKind::ExclusiveEni],
        );
        let p = pod(&[(annotations::POD_ENI, "true")]);
        assert_eq!(resolve(Some(&p), &n), Ok(ResourceKind::ExclusiveEni));
    }

    #[test]
    fn a_pod_of_a_podnetworking_gets_its_pod_eni_and_is_refused_where_none_is_read() {
        let p = pod(&[
            (annotations::POD_NETWORKING, "fast"),
            (annotations::POD_ENI, "true"),
        ]);
        let with = node(
            ResourceKind::SharedIp,
            &[ResourceKind::SharedIp, ResourceKind::PodEni],
        );
        assert_eq!(resolve(Some(&p), &with), Ok(ResourceKind::PodEni));
        let without = node(ResourceKind::ExclusiveEni, &[ResourceKind::ExclusiveEni]);
        let e = resolve(Some(&p), &without).unwrap_err();
        assert!(
            e.0.contains("PodNetworking fast") && e.0.contains("--in-cluster"),
            "{e}"
        );
    }

    #[test]
    fn a_request_the_node_cannot_serve_is_refused_with_what_to_do() {
        let n = node(ResourceKind::SharedIp, &[ResourceKind::SharedIp]);
        let e = resolve(Some(&pod(&[(annotations::POD_ENI, "true")])), &n).unwrap_err();
        assert!(
            e.0.contains("ns/p") && e.0.contains("node-1") && e.0.contains("shared-ip"),
            "{e}"
        );
        assert!(e.0.contains("eniOnly"), "{e}");
    }
}

//! The pure half of the pod webhook: which PodNetworking a new pod belongs to and the JSON patch that
//! says so (annotations the daemon reads, the extended resource the scheduler places it by, the zones
//! its vSwitches are in). No I/O: the caller passes the pod, its namespace's labels and the
//! PodNetworkings.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use serde_json::{json, Value};
use terway_apis::{EniAttachType, NetworkingStatus, PodNetworking};
use terway_core::annotations::{POD_ENI, POD_NETWORKING};

/// The extended resource of an exclusive ENI (advertised by terwayd's device plugin).
pub const RESOURCE_ENI: &str = "aliyun/eni";
/// The extended resource of a trunk member ENI.
pub const RESOURCE_MEMBER_ENI: &str = "aliyun/member-eni";
/// The node label of a node's zone (set by the cloud's node controller).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What to do with a pod being created.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not ours: admit as is.
    Unchanged,
    /// Admit with this JSON patch; it belongs to the named PodNetworking.
    Patch {
        /// The PodNetworking.
        networking: String,
        /// RFC 6902 operations.
        ops: Vec<Value>,
    },
    /// Refuse, with the message the user sees.
    Deny(String),
}

/// Whether `selector` (absent: no constraint) matches `labels`; `None` when it does not parse.
fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Option<bool> {
    match selector {
        None => Some(true),
        Some(s) => Selector::try_from(s.clone())
            .ok()
            .map(|sel| sel.matches(labels)),
    }
}

/// Whether `pn` selects a pod with `pod_labels` in a namespace with `ns_labels`. A PodNetworking with
/// neither selector selects nothing (it would otherwise take every pod of the cluster); one whose
/// selector does not parse selects nothing either (its status says Fail).
pub fn selects(
    pn: &PodNetworking,
    pod_labels: &BTreeMap<String, String>,
    ns_labels: &BTreeMap<String, String>,
) -> bool {
    let sel = &pn.spec.selector;
    if sel.pod_selector.is_none() && sel.namespace_selector.is_none() {
        return false;
    }
    selector_matches(sel.pod_selector.as_ref(), pod_labels) == Some(true)
        && selector_matches(sel.namespace_selector.as_ref(), ns_labels) == Some(true)
}

/// The extended resource a pod of `pn` requests.
pub fn resource_of(pn: &PodNetworking) -> &'static str {
    match pn.spec.eni_options.eni_type {
        EniAttachType::Trunk => RESOURCE_MEMBER_ENI,
        // Default follows the cluster; this cluster has no trunk datapath yet, so Default is exclusive.
        EniAttachType::Eni | EniAttachType::Default => RESOURCE_ENI,
    }
}

/// `~` and `/` escaped for a JSON pointer.
fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn pod_label(pod: &Pod, namespace: &str) -> String {
    let name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone().map(|g| format!("{g}*")))
        .unwrap_or_default();
    format!("{namespace}/{name}")
}

/// Decide for `pod` (being created in `namespace`, whose labels are `ns_labels`). `pinned_zone` is the
/// zone of the fixed IP the pod's name already holds (its PodENI's), which it must return to.
pub fn decide(
    pod: &Pod,
    namespace: &str,
    ns_labels: &BTreeMap<String, String>,
    networkings: &[PodNetworking],
    pinned_zone: Option<&str>,
) -> Decision {
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.host_network == Some(true) {
        return Decision::Unchanged;
    }
    let who = pod_label(pod, namespace);
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let chosen: Vec<&PodNetworking> = match annotations.get(POD_NETWORKING) {
        // The user named one: that one, whatever the selectors say.
        Some(name) => match networkings.iter().find(|p| p.metadata.name.as_deref() == Some(name)) {
            Some(pn) => vec![pn],
            None => {
                return Decision::Deny(format!(
                    "pod {who} names PodNetworking {name} in its {POD_NETWORKING} annotation, and there is no such PodNetworking; create it or remove the annotation"
                ))
            }
        },
        None => {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            networkings
                .iter()
                .filter(|pn| selects(pn, &labels, ns_labels))
                .collect()
        }
    };
    let pn = match chosen.as_slice() {
        [] => return Decision::Unchanged,
        [one] => *one,
        many => {
            let mut names: Vec<&str> = many
                .iter()
                .filter_map(|p| p.metadata.name.as_deref())
                .collect();
            names.sort_unstable();
            return Decision::Deny(format!(
                "pod {who} is selected by PodNetworkings {}; a pod can have one network: make their selectors disjoint or name one in the {POD_NETWORKING} annotation",
                names.join(" and ")
            ));
        }
    };
    let name = pn.metadata.name.clone().unwrap_or_default();
    let status = pn.status.clone().unwrap_or_default();
    if status.status != Some(NetworkingStatus::Ready) {
        let why = if status.message.is_empty() {
            "it has not been validated yet".to_string()
        } else {
            status.message.clone()
        };
        return Decision::Deny(format!(
            "pod {who} belongs to PodNetworking {name}, which is not Ready ({why}); the pod is not created with another network"
        ));
    }

    let mut ops = Vec::new();
    if pod.metadata.annotations.is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    for (key, value) in [(POD_NETWORKING, name.as_str()), (POD_ENI, "true")] {
        if annotations.get(key).map(String::as_str) != Some(value) {
            ops.push(json!({
                "op": "add",
                "path": format!("/metadata/annotations/{}", pointer_escape(key)),
                "value": value,
            }));
        }
    }

    // The extended resource on the first container: the scheduler then only places the pod on a node
    // that has an ENI left. Extended resources need limits; requests, when present, must equal them.
    let resource = resource_of(pn);
    if let Some(c) = spec.containers.first() {
        let res = c.resources.clone().unwrap_or_default();
        let base = "/spec/containers/0/resources";
        if c.resources.is_none() {
            ops.push(json!({"op": "add", "path": base, "value": {}}));
        }
        let key = pointer_escape(resource);
        if res
            .limits
            .as_ref()
            .is_none_or(|l| !l.contains_key(resource))
        {
            if res.limits.is_none() {
                ops.push(json!({"op": "add", "path": format!("{base}/limits"), "value": {}}));
            }
            ops.push(json!({"op": "add", "path": format!("{base}/limits/{key}"), "value": "1"}));
        }
        if let Some(req) = &res.requests {
            if !req.contains_key(resource) {
                ops.push(
                    json!({"op": "add", "path": format!("{base}/requests/{key}"), "value": "1"}),
                );
            }
        }
    }

    // Only nodes in a zone of the PodNetworking's vSwitches can attach its ENIs; a fixed IP only in its.
    let zones: BTreeSet<String> = match pinned_zone.filter(|z| !z.is_empty()) {
        Some(z) => BTreeSet::from([z.to_string()]),
        None => status
            .v_switches
            .iter()
            .map(|v| v.zone.clone())
            .filter(|z| !z.is_empty())
            .collect(),
    };
    if !zones.is_empty() {
        ops.push(json!({
            "op": "add",
            "path": "/spec/affinity",
            "value": with_zones(spec.affinity.as_ref().map(|a| serde_json::to_value(a).unwrap_or(Value::Null)), &zones),
        }));
    }
    Decision::Patch {
        networking: name,
        ops,
    }
}

/// `affinity` (as JSON; absent or null: none) with a required node affinity to `zones` added: ANDed
/// into every existing node selector term, or as the only term.
fn with_zones(affinity: Option<Value>, zones: &BTreeSet<String>) -> Value {
    let expr = json!({"key": ZONE_LABEL, "operator": "In", "values": zones});
    let mut aff = match affinity {
        Some(Value::Object(m)) => Value::Object(m),
        _ => json!({}),
    };
    let required = &mut aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    let terms = required["nodeSelectorTerms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let terms: Vec<Value> = if terms.is_empty() {
        vec![json!({"matchExpressions": [expr]})]
    } else {
        terms
            .into_iter()
            .map(|mut t| {
                let mut list = t["matchExpressions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                list.push(expr.clone());
                t["matchExpressions"] = Value::Array(list);
                t
            })
            .collect()
    };
    *required = json!({"nodeSelectorTerms": terms});
    aff
}

#[cfg(test)]
mod tests {
    use super::*;
    use terway_apis::{PodNetworkingSpec, PodNetworkingStatus, Selector as PnSelector, VSwitch};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pn(
        name: &str,
        pod: Option<&[(&str, &str)]>,
        ns: Option<&[(&str, &str)]>,
        ready: bool,
    ) -> PodNetworking {
        let sel = |l: Option<&[(&str, &str)]>| {
            l.map(|l| LabelSelector {
                match_labels: Some(labels(l)),
                ..Default::default()
            })
        };
        let mut p = PodNetworking::new(
            name,
            PodNetworkingSpec {
                selector: PnSelector {
                    pod_selector: sel(pod),
                    namespace_selector: sel(ns),
                },
                ..Default::default()
            },
        );
        p.status = Some(PodNetworkingStatus {
            status: Some(if ready {
                NetworkingStatus::Ready
            } else {
                NetworkingStatus::Fail
            }),
            v_switches: vec![VSwitch {
                id: "vsw-1".into(),
                zone: "zone-a".into(),
            }],
            message: if ready {
                String::new()
            } else {
                "vSwitch vsw-x does not exist".into()
            },
            ..Default::default()
        });
        p
    }

    fn pod(labels_: &[(&str, &str)], extra: Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": "web-0", "labels": labels(labels_)},
            "spec": {"containers": [{"name": "main", "image": "x"}]},
        });
        if let (Some(obj), Value::Object(more)) = (v["spec"].as_object_mut(), extra) {
            obj.extend(more);
        }
        serde_json::from_value(v).unwrap_or_default()
    }

    /// Apply `ops` to `pod` (a small RFC 6902 `add` interpreter: enough to check the patch).
    fn patched(pod: &Pod, ops: &[Value]) -> Value {
        let mut doc = serde_json::to_value(pod).unwrap_or(Value::Null);
        for op in ops {
            assert_eq!(op["op"], "add", "{op}");
            let path = op["path"].as_str().unwrap_or_default();
            let parts: Vec<String> = path[1..]
                .split('/')
                .map(|p| p.replace("~1", "/").replace("~0", "~"))
                .collect();
            let (last, parents) = parts.split_last().unwrap_or((&parts[0], &[]));
            let mut at = &mut doc;
            for p in parents {
                at = match at {
                    Value::Array(a) => &mut a[p.parse::<usize>().unwrap_or(0)],
                    other => other
                        .get_mut(p.as_str())
                        .unwrap_or_else(|| panic!("{path}: no parent {p}")),
                };
            }
            match at {
                Value::Object(m) => {
                    m.insert(last.clone(), op["value"].clone());
                }
                other => panic!("{path}: parent is {other}"),
            }
        }
        doc
    }

    #[test]
    fn a_selected_pod_gets_the_annotations_the_resource_and_the_zones() {
        let nets = [pn("blue", Some(&[("app", "web")]), None, true)];
        let p = pod(&[("app", "web")], json!({}));
        let Decision::Patch { networking, ops } =
            decide(&p, "default", &BTreeMap::new(), &nets, None)
        else {
            panic!("not patched");
        };
        assert_eq!(networking, "blue");
        let doc = patched(&p, &ops);
        assert_eq!(doc["metadata"]["annotations"][POD_NETWORKING], "blue");
        assert_eq!(doc["metadata"]["annotations"][POD_ENI], "true");
        assert_eq!(
            doc["spec"]["containers"][0]["resources"]["limits"][RESOURCE_ENI],
            "1"
        );
        assert_eq!(
            doc["spec"]["affinity"]["nodeAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
                ["matchExpressions"][0],
            json!({"key": ZONE_LABEL, "operator": "In", "values": ["zone-a"]})
        );
    }

    #[test]
    fn existing_requests_and_node_terms_are_kept_and_extended() {
        let nets = [pn("blue", Some(&[("app", "web")]), None, true)];
        let p = pod(
            &[("app", "web")],
            json!({
                "containers": [{"name": "main", "image": "x", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
                    {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}
                ]}}}
            }),
        );
        let Decision::Patch { ops, .. } = decide(&p, "default", &BTreeMap::new(), &nets, None)
        else {
            panic!("not patched");
        };
        let doc = patched(&p, &ops);
        let res = &doc["spec"]["containers"][0]["resources"];
        assert_eq!(
            (
                res["requests"]["cpu"].clone(),
                res["requests"][RESOURCE_ENI].clone()
            ),
            (json!("1"), json!("1"))
        );
        assert_eq!(
            (
                res["limits"]["cpu"].clone(),
                res["limits"][RESOURCE_ENI].clone()
            ),
            (json!("2"), json!("1"))
        );
        let terms = &doc["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        for t in 0..2 {
            let exprs = terms[t]["matchExpressions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(exprs.len(), 2, "{terms}");
            assert_eq!(exprs[1]["key"], ZONE_LABEL);
        }
    }

    #[test]
    fn two_matching_networkings_are_refused_naming_both() {
        let nets = [
            pn("red", Some(&[("app", "web")]), None, true),
            pn("blue", None, Some(&[("team", "a")]), true),
        ];
        let p = pod(&[("app", "web")], json!({}));
        match decide(&p, "shop", &labels(&[("team", "a")]), &nets, None) {
            Decision::Deny(m) => {
                assert!(
                    m.contains("shop/web-0") && m.contains("blue and red"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_networking_that_is_not_ready_refuses_its_pods_with_its_message() {
        let nets = [pn("red", Some(&[("app", "web")]), None, false)];
        match decide(
            &pod(&[("app", "web")], json!({})),
            "default",
            &BTreeMap::new(),
            &nets,
            None,
        ) {
            Decision::Deny(m) => assert!(
                m.contains("not Ready (vSwitch vsw-x does not exist)"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unselected_host_network_and_selectorless_cases_are_left_alone() {
        let nets = [
            pn("red", Some(&[("app", "db")]), None, true),
            pn("everything", None, None, true),
        ];
        assert_eq!(
            decide(
                &pod(&[("app", "web")], json!({})),
                "default",
                &BTreeMap::new(),
                &nets,
                None
            ),
            Decision::Unchanged
        );
        let host = pod(&[("app", "db")], json!({"hostNetwork": true}));
        assert_eq!(
            decide(&host, "default", &BTreeMap::new(), &nets, None),
            Decision::Unchanged
        );
    }

    #[test]
    fn both_selectors_must_match_and_the_annotation_overrides_them() {
        let nets = [pn(
            "red",
            Some(&[("app", "web")]),
            Some(&[("team", "a")]),
            true,
        )];
        let p = pod(&[("app", "web")], json!({}));
        assert_eq!(
            decide(&p, "other", &labels(&[("team", "b")]), &nets, None),
            Decision::Unchanged
        );
        assert!(matches!(
            decide(&p, "mine", &labels(&[("team", "a")]), &nets, None),
            Decision::Patch { .. }
        ));

        let mut named = pod(&[], json!({}));
        named.metadata.annotations = Some(labels(&[(POD_NETWORKING, "red")]));
        assert!(matches!(
            decide(&named, "x", &BTreeMap::new(), &nets, None),
            Decision::Patch { .. }
        ));
        named.metadata.annotations = Some(labels(&[(POD_NETWORKING, "nope")]));
        match decide(&named, "x", &BTreeMap::new(), &nets, None) {
            Decision::Deny(m) => assert!(m.contains("no such PodNetworking"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pod_returning_to_its_fixed_ip_is_pinned_to_that_zone() {
        let nets = [pn("blue", Some(&[("app", "web")]), None, true)];
        let p = pod(&[("app", "web")], json!({}));
        let Decision::Patch { ops, .. } =
            decide(&p, "default", &BTreeMap::new(), &nets, Some("zone-q"))
        else {
            panic!("not patched");
        };
        let doc = patched(&p, &ops);
        assert_eq!(
            doc["spec"]["affinity"]["nodeAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
                ["matchExpressions"][0]["values"],
            json!(["zone-q"])
        );
    }

    #[test]
    fn trunk_networkings_request_member_enis() {
        let mut p = pn("t", Some(&[("app", "web")]), None, true);
        p.spec.eni_options.eni_type = EniAttachType::Trunk;
        assert_eq!(resource_of(&p), RESOURCE_MEMBER_ENI);
        assert_eq!(pointer_escape("aliyun/member-eni"), "aliyun~1member-eni");
    }
}

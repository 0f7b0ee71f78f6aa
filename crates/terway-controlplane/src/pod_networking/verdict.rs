//! The pure half of the PodNetworking controller: what the cloud said about a PodNetworking's
//! vSwitches and security groups → its status. No I/O, so every rule is unit-tested.

use std::collections::BTreeSet;

use terway_apis::{NetworkingStatus, PodNetworkingSpec, VSwitch};
use terway_cloud::{SecurityGroup, VSwitch as CloudVSwitch};

/// At most this many security groups can be attached to one ENI (the ECS limit Terway also applies).
pub const MAX_SECURITY_GROUPS: usize = 10;

/// What the cloud answered for a PodNetworking's references.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// DescribeVSwitches for `spec.vSwitchOptions`.
    pub vswitches: Vec<CloudVSwitch>,
    /// DescribeSecurityGroups for `spec.securityGroupIDs`.
    pub security_groups: Vec<SecurityGroup>,
}

/// The status a PodNetworking should have.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Ready or Fail.
    pub status: NetworkingStatus,
    /// The vSwitches that exist, with their zones, in `vSwitchOptions` order.
    pub vswitches: Vec<VSwitch>,
    /// Why it failed, or what is worth knowing while Ready (empty when nothing is).
    pub message: String,
}

impl Verdict {
    /// Whether this is Ready.
    pub fn is_ready(&self) -> bool {
        self.status == NetworkingStatus::Ready
    }
}

fn unique(ids: &[String]) -> Vec<&str> {
    let mut seen = BTreeSet::new();
    ids.iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect()
}

/// Judge `spec` against what the cloud answered. `vpc_id` is the cluster's VPC: a vSwitch or a
/// security group of another VPC cannot serve its pods. Every problem is listed, not only the first,
/// so one edit can fix them all.
pub fn judge(spec: &PodNetworkingSpec, seen: &Observed, vpc_id: &str) -> Verdict {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut resolved = Vec::new();

    let vsw_ids = unique(&spec.v_switch_options);
    if vsw_ids.is_empty() {
        problems.push("spec.vSwitchOptions is empty: list at least one vSwitch".to_string());
    }
    let mut with_ips = 0usize;
    for id in &vsw_ids {
        match seen.vswitches.iter().find(|v| v.id == *id) {
            None => problems.push(format!("vSwitch {id} does not exist")),
            Some(v) if v.vpc_id != vpc_id => problems.push(format!(
                "vSwitch {id} is in {}, not the cluster's VPC {vpc_id}",
                v.vpc_id
            )),
            Some(v) => {
                resolved.push(VSwitch {
                    id: v.id.clone(),
                    zone: v.zone_id.clone(),
                });
                if v.available_ip_count == 0 {
                    notes.push(format!("vSwitch {id} has no free IP"));
                } else {
                    with_ips += 1;
                }
            }
        }
    }
    if !resolved.is_empty() && with_ips == 0 && problems.is_empty() {
        problems.push(format!(
            "no vSwitch has a free IP ({}): add a vSwitch with free addresses to spec.vSwitchOptions",
            vsw_ids.join(", ")
        ));
        notes.clear();
    }

    let sel = &spec.selector;
    for (what, selector) in [
        ("podSelector", &sel.pod_selector),
        ("namespaceSelector", &sel.namespace_selector),
    ] {
        if let Some(s) = selector {
            if let Err(e) = kube::core::Selector::try_from(s.clone()) {
                problems.push(format!("spec.selector.{what} is invalid: {e}"));
            }
        }
    }
    if sel.pod_selector.is_none() && sel.namespace_selector.is_none() {
        notes.push("spec.selector is empty: no pod is selected".to_string());
    }

    let sg_ids = unique(&spec.security_group_ids);
    if sg_ids.len() > MAX_SECURITY_GROUPS {
        problems.push(format!(
            "spec.securityGroupIDs lists {} groups; an ENI takes at most {MAX_SECURITY_GROUPS}",
            sg_ids.len()
        ));
    }
    for id in &sg_ids {
        match seen.security_groups.iter().find(|g| g.id == *id) {
            None => problems.push(format!("security group {id} does not exist")),
            Some(g) if g.vpc_id != vpc_id => problems.push(format!(
                "security group {id} is in {}, not the cluster's VPC {vpc_id}",
                g.vpc_id
            )),
            Some(_) => {}
        }
    }
    if sg_ids.is_empty() {
        notes.push("no securityGroupIDs: pods get eni-config's security groups".to_string());
    }

    if problems.is_empty() {
        Verdict {
            status: NetworkingStatus::Ready,
            vswitches: resolved,
            message: notes.join("; "),
        }
    } else {
        Verdict {
            status: NetworkingStatus::Fail,
            vswitches: resolved,
            message: format!(
                "{}; pods selected by this PodNetworking are not served until it is fixed",
                problems.join("; ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VPC: &str = "vpc-lab";

    fn vsw(id: &str, zone: &str, free: u64) -> CloudVSwitch {
        CloudVSwitch {
            id: id.into(),
            zone_id: zone.into(),
            vpc_id: VPC.into(),
            cidr: "10.0.0.0/24".parse().unwrap_or_default(),
            ipv6_cidr: None,
            available_ip_count: free,
        }
    }

    fn sg(id: &str) -> SecurityGroup {
        SecurityGroup {
            id: id.into(),
            name: String::new(),
            vpc_id: VPC.into(),
        }
    }

    fn spec(vsws: &[&str], sgs: &[&str]) -> PodNetworkingSpec {
        PodNetworkingSpec {
            v_switch_options: vsws.iter().map(|s| s.to_string()).collect(),
            security_group_ids: sgs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn existing_vswitches_and_groups_are_ready_with_their_zones_in_order() {
        let seen = Observed {
            vswitches: vec![vsw("vsw-b", "zone-b", 5), vsw("vsw-a", "zone-a", 5)],
            security_groups: vec![sg("sg-1")],
        };
        let v = judge(&spec(&["vsw-a", "vsw-b", "vsw-a"], &["sg-1"]), &seen, VPC);
        assert!(v.is_ready(), "{v:?}");
        assert_eq!(
            v.vswitches,
            vec![
                VSwitch {
                    id: "vsw-a".into(),
                    zone: "zone-a".into()
                },
                VSwitch {
                    id: "vsw-b".into(),
                    zone: "zone-b".into()
                }
            ]
        );
        assert_eq!(v.message, "spec.selector is empty: no pod is selected");
    }

    #[test]
    fn every_missing_reference_is_named_in_one_message() {
        let seen = Observed {
            vswitches: vec![vsw("vsw-a", "zone-a", 5)],
            security_groups: vec![],
        };
        let v = judge(&spec(&["vsw-a", "vsw-gone"], &["sg-gone"]), &seen, VPC);
        assert_eq!(v.status, NetworkingStatus::Fail);
        assert!(
            v.message.contains("vSwitch vsw-gone does not exist"),
            "{}",
            v.message
        );
        assert!(
            v.message.contains("security group sg-gone does not exist"),
            "{}",
            v.message
        );
        assert!(v.message.contains("not served"), "{}", v.message);
        assert_eq!(v.vswitches.len(), 1, "what exists is still resolved");
    }

    #[test]
    fn an_empty_vswitch_list_fails() {
        let v = judge(&spec(&[], &[]), &Observed::default(), VPC);
        assert_eq!(v.status, NetworkingStatus::Fail);
        assert!(
            v.message.contains("vSwitchOptions is empty"),
            "{}",
            v.message
        );
    }

    #[test]
    fn exhausted_vswitches_fail_only_when_none_has_addresses() {
        let one_full = Observed {
            vswitches: vec![vsw("vsw-full", "z", 0), vsw("vsw-free", "z", 3)],
            security_groups: vec![],
        };
        let v = judge(&spec(&["vsw-full", "vsw-free"], &[]), &one_full, VPC);
        assert!(v.is_ready(), "{v:?}");
        assert!(
            v.message.contains("vSwitch vsw-full has no free IP"),
            "{}",
            v.message
        );
        assert!(
            v.message.contains("eni-config's security groups"),
            "{}",
            v.message
        );

        let all_full = Observed {
            vswitches: vec![vsw("vsw-full", "z", 0)],
            security_groups: vec![],
        };
        let v = judge(&spec(&["vsw-full"], &[]), &all_full, VPC);
        assert_eq!(v.status, NetworkingStatus::Fail);
        assert!(
            v.message.contains("no vSwitch has a free IP (vsw-full)"),
            "{}",
            v.message
        );
    }

    #[test]
    fn references_of_another_vpc_fail() {
        let mut other = vsw("vsw-x", "z", 5);
        other.vpc_id = "vpc-other".into();
        let mut group = sg("sg-x");
        group.vpc_id = "vpc-other".into();
        let seen = Observed {
            vswitches: vec![other],
            security_groups: vec![group],
        };
        let v = judge(&spec(&["vsw-x"], &["sg-x"]), &seen, VPC);
        assert_eq!(v.status, NetworkingStatus::Fail);
        assert!(v
            .message
            .contains("vSwitch vsw-x is in vpc-other, not the cluster's VPC vpc-lab"));
        assert!(v.message.contains("security group sg-x is in vpc-other"));
    }

    #[test]
    fn an_invalid_selector_fails_and_an_empty_one_is_noted() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
            LabelSelector, LabelSelectorRequirement,
        };
        let seen = Observed {
            vswitches: vec![vsw("vsw-a", "z", 5)],
            security_groups: vec![],
        };
        let v = judge(&spec(&["vsw-a"], &[]), &seen, VPC);
        assert!(v.is_ready());
        assert!(v.message.contains("no pod is selected"), "{}", v.message);
        let mut bad = spec(&["vsw-a"], &[]);
        bad.selector.pod_selector = Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "Sideways".into(),
                values: None,
            }]),
            ..Default::default()
        });
        let v = judge(&bad, &seen, VPC);
        assert_eq!(v.status, NetworkingStatus::Fail);
        assert!(
            v.message.contains("spec.selector.podSelector is invalid"),
            "{}",
            v.message
        );
    }

    #[test]
    fn more_than_ten_groups_fail() {
        let ids: Vec<String> = (0..11).map(|i| format!("sg-{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let seen = Observed {
            vswitches: vec![vsw("vsw-a", "z", 5)],
            security_groups: ids.iter().map(|i| sg(i)).collect(),
        };
        let v = judge(&spec(&["vsw-a"], &refs), &seen, VPC);
        assert_eq!(v.status, NetworkingStatus::Fail);
        assert!(v.message.contains("lists 11 groups"), "{}", v.message);
    }
}

//! The pure half of the pod-ENI controllers: which vSwitch a pod's ENI comes from, and the next step
//! that brings a PodENI and its cloud ENI to where they should be (bound to the pod's instance, or
//! gone). Every step is one cloud call or one write, so a crash between any two is resumed by
//! recomputing the step from what is there.

use std::collections::BTreeMap;
use std::time::Duration;

use terway_apis::{IpAllocType, Phase, PodEni, ReleaseStrategy, SelectionPolicy, VSwitch};
use terway_cloud::{EniStatus, NetworkInterface};

/// The PodENI's finalizer: the ENI is released before the object goes.
pub const FINALIZER: &str = "network.alibabacloud.com/pod-eni";
/// Label of a PodENI: the node its pod runs on.
pub const NODE_LABEL: &str = "k8s.aliyun.com/node";
/// Annotation of a PodENI: the UID of the pod it was made for.
pub const POD_UID_ANNOTATION: &str = "k8s.aliyun.com/pod-uid";
/// Tag of every ENI the controlplane creates (Terway's controller uses the same).
pub const CREATOR_TAG: (&str, &str) = ("creator", "terway-controller");
/// Tag: `namespace/name` of the PodENI an ENI was created for.
pub const TAG_POD_ENI: &str = "terway.pod-eni";

/// Pick the vSwitch for a pod in `zone` among the PodNetworking's resolved vSwitches, given each one's
/// free addresses. `ordered` takes the first with addresses, `most` the one with the most, `random` a
/// stable pick by `seed` (the pod), so a retry picks the same one.
pub fn choose_vswitch(
    resolved: &[VSwitch],
    zone: &str,
    free: &BTreeMap<String, u64>,
    policy: Option<SelectionPolicy>,
    seed: &str,
) -> Option<String> {
    let candidates: Vec<&VSwitch> = resolved
        .iter()
        .filter(|v| v.zone == zone && free.get(&v.id).copied().unwrap_or(0) > 0)
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let pick = match policy.unwrap_or(SelectionPolicy::Ordered) {
        SelectionPolicy::Ordered => candidates[0],
        SelectionPolicy::Most => candidates
            .iter()
            .copied()
            .max_by_key(|v| free.get(&v.id).copied().unwrap_or(0))
            .unwrap_or(candidates[0]),
        SelectionPolicy::Random => {
            let h = seed
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            candidates[(h % candidates.len() as u64) as usize]
        }
    };
    Some(pick.id.clone())
}

/// The next step toward a bound PodENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindStep {
    /// The intent (vSwitch, groups) is written but no ENI exists yet: create it.
    Create,
    /// The ENI exists, unattached: attach it to the instance.
    Attach,
    /// The ENI is attached to another instance (a fixed-IP pod moved): detach it first.
    Detach {
        /// Where it is attached.
        from: String,
    },
    /// The cloud is still moving the ENI (Attaching/Detaching): look again shortly.
    Wait,
    /// The ENI is in use on the instance: record Bind.
    MarkBound,
    /// Bound already.
    Done,
    /// The PodENI names an ENI the cloud no longer has.
    Vanished {
        /// The ENI id.
        eni: String,
    },
}

/// The ENI id of a PodENI's first allocation (empty: not created yet).
pub fn eni_id(pe: &PodEni) -> &str {
    pe.spec
        .allocations
        .first()
        .map(|a| a.eni.id.as_str())
        .unwrap_or_default()
}

/// Next step for `pe` to be bound to `instance`, `cloud` being the cloud's view of its ENI.
pub fn bind_step(pe: &PodEni, cloud: Option<&NetworkInterface>, instance: &str) -> BindStep {
    let id = eni_id(pe);
    if id.is_empty() {
        return BindStep::Create;
    }
    let Some(eni) = cloud else {
        return BindStep::Vanished {
            eni: id.to_string(),
        };
    };
    let attached_to = eni.instance_id.as_deref().unwrap_or_default();
    match eni.status {
        EniStatus::Available => BindStep::Attach,
        EniStatus::Attaching | EniStatus::Detaching | EniStatus::Deleting => BindStep::Wait,
        EniStatus::InUse if attached_to != instance => BindStep::Detach {
            from: attached_to.to_string(),
        },
        EniStatus::InUse => {
            let status = pe.status.clone().unwrap_or_default();
            if status.phase == terway_apis::Phase::Bind && status.instance_id == instance {
                BindStep::Done
            } else {
                BindStep::MarkBound
            }
        }
    }
}

/// The next step releasing a PodENI's ENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseStep {
    /// Detach from `from`.
    Detach {
        /// Where it is attached.
        from: String,
    },
    /// The cloud is still moving it.
    Wait,
    /// Delete the (unattached) ENI.
    Delete,
    /// The ENI is gone (or was never made): drop the finalizer.
    Forget,
}

/// Next step releasing an ENI the cloud shows as `cloud`.
pub fn release_step(cloud: Option<&NetworkInterface>) -> ReleaseStep {
    match cloud {
        None => ReleaseStep::Forget,
        Some(eni) => match eni.status {
            EniStatus::Available => ReleaseStep::Delete,
            EniStatus::InUse => ReleaseStep::Detach {
                from: eni.instance_id.clone().unwrap_or_default(),
            },
            EniStatus::Attaching | EniStatus::Detaching | EniStatus::Deleting => ReleaseStep::Wait,
        },
    }
}

/// How long a fixed IP whose pod is gone is kept when its PodNetworking gives no `releaseAfter`.
pub const DEFAULT_RELEASE_AFTER: Duration = Duration::from_secs(300);

/// Whether `pe` holds a fixed IP (it outlives its pod).
pub fn is_fixed(pe: &PodEni) -> bool {
    pe.spec
        .allocations
        .first()
        .and_then(|a| a.allocation_type.alloc_type)
        == Some(IpAllocType::Fixed)
}

/// What to do with a PodENI whose pod is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// Elastic, or a fixed IP whose time is up: release the ENI and let the PodENI go.
    Release,
    /// A fixed IP still attached where its pod was: detach it and keep it for the pod's return.
    Unbind,
    /// Kept; look again after this long (TTL).
    KeepFor(Duration),
    /// Kept until someone deletes the PodENI (`releaseStrategy: Never`).
    Keep,
}

/// Decide for a PodENI whose pod is gone; `since_last_seen` is how long ago the pod was last seen
/// (`None`: not recorded yet).
pub fn when_pod_gone(pe: &PodEni, since_last_seen: Option<Duration>) -> Gone {
    if !is_fixed(pe) {
        return Gone::Release;
    }
    let status = pe.status.clone().unwrap_or_default();
    if status.phase != Phase::Unbind || since_last_seen.is_none() {
        return Gone::Unbind;
    }
    let alloc_type = pe
        .spec
        .allocations
        .first()
        .map(|a| a.allocation_type.clone())
        .unwrap_or_default();
    match alloc_type.release_strategy {
        Some(ReleaseStrategy::Never) => Gone::Keep,
        Some(ReleaseStrategy::Ttl) | None => {
            let ttl = alloc_type
                .release_after
                .parse::<terway_core::GoDuration>()
                .map(|d| d.0)
                .unwrap_or(DEFAULT_RELEASE_AFTER);
            let seen = since_last_seen.unwrap_or_default();
            if seen >= ttl {
                Gone::Release
            } else {
                Gone::KeepFor(ttl - seen)
            }
        }
    }
}

/// Whether an ENI found by the orphan GC may be released: it was created for a PodENI that no longer
/// exists, or that exists but records another ENI. An ENI whose PodENI exists with no ENI id yet is a
/// create in flight (the PodENI is written before the create) and is never touched.
pub fn orphaned(eni: &NetworkInterface, pod_enis: &BTreeMap<String, String>) -> bool {
    match eni.tags.get(TAG_POD_ENI) {
        // Not made for a PodENI (another tool of ours): leave it.
        None => false,
        Some(owner) => match pod_enis.get(owner) {
            None => true,
            Some(recorded) => !recorded.is_empty() && recorded != &eni.id,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use terway_apis::{Allocation, Eni, Phase, PodEniSpec, PodEniStatus};

    fn vsw(id: &str, zone: &str) -> VSwitch {
        VSwitch {
            id: id.into(),
            zone: zone.into(),
        }
    }

    fn eni(status: EniStatus, instance: Option<&str>) -> NetworkInterface {
        NetworkInterface {
            id: "eni-1".into(),
            mac: "02:00:00:00:00:01".into(),
            status,
            eni_type: terway_cloud::EniType::Secondary,
            vswitch_id: "vsw-a".into(),
            vpc_id: "vpc".into(),
            zone_id: "z".into(),
            instance_id: instance.map(String::from),
            trunk_eni_id: None,
            primary_ip: std::net::Ipv4Addr::new(10, 0, 0, 5),
            private_ips: vec![],
            ipv6_addresses: vec![],
            security_group_ids: vec![],
            tags: BTreeMap::new(),
        }
    }

    fn pod_eni(id: &str, phase: Phase, instance: &str) -> PodEni {
        let mut pe = PodEni::new(
            "web-0",
            PodEniSpec {
                allocations: vec![Allocation {
                    eni: Eni {
                        id: id.into(),
                        ..Default::default()
                    },
                    ..Default::default()
                }],
                zone: "z".into(),
            },
        );
        pe.status = Some(PodEniStatus {
            phase,
            instance_id: instance.into(),
            ..Default::default()
        });
        pe
    }

    #[test]
    fn the_vswitch_is_in_the_pods_zone_has_addresses_and_follows_the_policy() {
        let resolved = [
            vsw("a", "z1"),
            vsw("b", "z2"),
            vsw("c", "z2"),
            vsw("d", "z2"),
        ];
        let free: BTreeMap<String, u64> = [("a", 9), ("b", 0), ("c", 3), ("d", 7)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        assert_eq!(
            choose_vswitch(&resolved, "z2", &free, None, "p").as_deref(),
            Some("c")
        );
        assert_eq!(
            choose_vswitch(&resolved, "z2", &free, Some(SelectionPolicy::Most), "p").as_deref(),
            Some("d")
        );
        let r1 = choose_vswitch(
            &resolved,
            "z2",
            &free,
            Some(SelectionPolicy::Random),
            "ns/p",
        );
        assert_eq!(
            r1,
            choose_vswitch(
                &resolved,
                "z2",
                &free,
                Some(SelectionPolicy::Random),
                "ns/p"
            )
        );
        assert!(matches!(r1.as_deref(), Some("c") | Some("d")));
        assert_eq!(choose_vswitch(&resolved, "z3", &free, None, "p"), None);
    }

    #[test]
    fn binding_walks_create_attach_mark_and_moves_an_eni_from_another_instance() {
        assert_eq!(
            bind_step(&pod_eni("", Phase::Initial, ""), None, "i-1"),
            BindStep::Create
        );
        let pe = pod_eni("eni-1", Phase::Initial, "");
        assert_eq!(
            bind_step(&pe, None, "i-1"),
            BindStep::Vanished {
                eni: "eni-1".into()
            }
        );
        assert_eq!(
            bind_step(&pe, Some(&eni(EniStatus::Available, None)), "i-1"),
            BindStep::Attach
        );
        assert_eq!(
            bind_step(&pe, Some(&eni(EniStatus::Attaching, Some("i-1"))), "i-1"),
            BindStep::Wait
        );
        assert_eq!(
            bind_step(&pe, Some(&eni(EniStatus::InUse, Some("i-1"))), "i-1"),
            BindStep::MarkBound
        );
        assert_eq!(
            bind_step(&pe, Some(&eni(EniStatus::InUse, Some("i-2"))), "i-1"),
            BindStep::Detach { from: "i-2".into() }
        );
        let bound = pod_eni("eni-1", Phase::Bind, "i-1");
        assert_eq!(
            bind_step(&bound, Some(&eni(EniStatus::InUse, Some("i-1"))), "i-1"),
            BindStep::Done
        );
    }

    #[test]
    fn release_detaches_then_deletes_then_forgets() {
        assert_eq!(
            release_step(Some(&eni(EniStatus::InUse, Some("i-1")))),
            ReleaseStep::Detach { from: "i-1".into() }
        );
        assert_eq!(
            release_step(Some(&eni(EniStatus::Detaching, Some("i-1")))),
            ReleaseStep::Wait
        );
        assert_eq!(
            release_step(Some(&eni(EniStatus::Available, None))),
            ReleaseStep::Delete
        );
        assert_eq!(release_step(None), ReleaseStep::Forget);
    }

    #[test]
    fn a_fixed_ip_is_unbound_kept_for_its_ttl_then_released_and_elastic_ones_go_at_once() {
        use terway_apis::{AllocationType, IpAllocType, ReleaseStrategy};
        let mut pe = pod_eni("eni-1", Phase::Bind, "i-1");
        assert_eq!(when_pod_gone(&pe, None), Gone::Release, "elastic");
        pe.spec.allocations[0].allocation_type = AllocationType {
            alloc_type: Some(IpAllocType::Fixed),
            release_strategy: Some(ReleaseStrategy::Ttl),
            release_after: "20s".into(),
        };
        assert_eq!(
            when_pod_gone(&pe, Some(Duration::from_secs(99))),
            Gone::Unbind
        );
        let mut unbound = pe.clone();
        unbound.status = Some(PodEniStatus {
            phase: Phase::Unbind,
            ..Default::default()
        });
        assert_eq!(
            when_pod_gone(&unbound, None),
            Gone::Unbind,
            "no last-seen time yet"
        );
        assert_eq!(
            when_pod_gone(&unbound, Some(Duration::from_secs(5))),
            Gone::KeepFor(Duration::from_secs(15))
        );
        assert_eq!(
            when_pod_gone(&unbound, Some(Duration::from_secs(20))),
            Gone::Release
        );
        unbound.spec.allocations[0].allocation_type.release_strategy = Some(ReleaseStrategy::Never);
        assert_eq!(
            when_pod_gone(&unbound, Some(Duration::from_secs(1 << 30))),
            Gone::Keep
        );
        unbound.spec.allocations[0].allocation_type.release_strategy = None;
        unbound.spec.allocations[0]
            .allocation_type
            .release_after
            .clear();
        assert_eq!(
            when_pod_gone(&unbound, Some(Duration::ZERO)),
            Gone::KeepFor(DEFAULT_RELEASE_AFTER)
        );
    }

    #[test]
    fn only_enis_of_gone_or_superseded_pod_enis_are_orphans_never_one_in_flight() {
        let mut e = eni(EniStatus::Available, None);
        assert!(
            !orphaned(&e, &BTreeMap::new()),
            "untagged: not ours to judge"
        );
        e.tags.insert(TAG_POD_ENI.into(), "ns/web-0".into());
        assert!(orphaned(&e, &BTreeMap::new()), "its PodENI is gone");
        let in_flight = BTreeMap::from([("ns/web-0".to_string(), String::new())]);
        assert!(!orphaned(&e, &in_flight), "create in flight");
        let recorded = BTreeMap::from([("ns/web-0".to_string(), "eni-1".to_string())]);
        assert!(!orphaned(&e, &recorded));
        let other = BTreeMap::from([("ns/web-0".to_string(), "eni-9".to_string())]);
        assert!(orphaned(&e, &other), "a duplicate of the recorded ENI");
    }
}

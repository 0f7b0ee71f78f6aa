//! `KubePodEniSource`: the daemon reads a pod's PodENI straight from the API server (one GET per look;
//! a waiting pod looks four times a second until the controlplane has bound its ENI).

use futures::future::BoxFuture;
use kube::{Api, Client, ResourceExt};
use terway_apis::{Phase, PodEni};
use terway_daemon::backend::pod_eni::{PodEniSource, PodEniView};
use terway_daemon::PodKey;

/// Annotation of a PodENI naming the UID of the pod it was made for (written by the controlplane).
pub const POD_UID_ANNOTATION: &str = "k8s.aliyun.com/pod-uid";

/// PodENIs from the API server.
#[derive(Clone)]
pub struct KubePodEniSource {
    client: Client,
}

impl KubePodEniSource {
    /// A source using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// What the daemon needs of `pe`.
pub fn view(pe: &PodEni) -> PodEniView {
    let alloc = pe.spec.allocations.first().cloned().unwrap_or_default();
    let status = pe.status.clone().unwrap_or_default();
    PodEniView {
        pod_uid: pe
            .annotations()
            .get(POD_UID_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        bound: status.phase == Phase::Bind,
        instance_id: status.instance_id.clone(),
        eni_id: alloc.eni.id.clone(),
        mac: alloc.eni.mac.clone(),
        vswitch_id: alloc.eni.v_switch_id.clone(),
        ip: alloc.ipv4.parse().ok(),
        cidr: alloc.ipv4_cidr.parse().ok(),
        phase: serde_json::to_value(status.phase)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
    }
}

impl PodEniSource for KubePodEniSource {
    fn pod_eni<'a>(&'a self, pod: &'a PodKey) -> BoxFuture<'a, Result<Option<PodEniView>, String>> {
        Box::pin(async move {
            let api: Api<PodEni> = Api::namespaced(self.client.clone(), &pod.namespace);
            api.get_opt(&pod.name)
                .await
                .map(|o| o.as_ref().map(view))
                .map_err(|e| format!("GET PodENI {pod}: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use terway_apis::{Allocation, Eni, PodEniSpec, PodEniStatus};

    #[test]
    fn a_bound_pod_eni_reads_as_bound_with_its_address() {
        let mut pe = PodEni::new(
            "web-0",
            PodEniSpec {
                allocations: vec![Allocation {
                    eni: Eni {
                        id: "eni-1".into(),
                        mac: "02:00:00:00:00:01".into(),
                        ..Default::default()
                    },
                    ipv4: "10.0.1.5".into(),
                    ipv4_cidr: "10.0.1.0/24".into(),
                    ..Default::default()
                }],
                zone: "z".into(),
            },
        );
        pe.metadata.annotations = Some([(POD_UID_ANNOTATION.to_string(), "u1".to_string())].into());
        pe.status = Some(PodEniStatus {
            phase: Phase::Bind,
            instance_id: "i-1".into(),
            ..Default::default()
        });
        let v = view(&pe);
        assert!(v.bound);
        assert_eq!(
            (v.pod_uid.as_str(), v.instance_id.as_str(), v.phase.as_str()),
            ("u1", "i-1", "Bind")
        );
        assert_eq!(v.ip, "10.0.1.5".parse().ok());
        assert_eq!(v.cidr, "10.0.1.0/24".parse().ok());
    }
}

//! Events the controllers write (events.k8s.io/v1, shaped by `terway_apis::events`). A failed write is
//! logged, never retried: the object's status carries the same verdict.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;
use terway_apis::events::{namespace_for, new_event, Note, Reporter};

/// `reportingController` of the controlplane's events.
pub const REPORTING_CONTROLLER: &str = "terway.alibabacloud.com/terway-controlplane";

/// Writes events as one controlplane replica.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    reporter: Reporter,
}

impl Events {
    /// Events written as `instance` (the replica's identity).
    pub fn new(client: kube::Client, instance: &str) -> Self {
        Self {
            client,
            reporter: Reporter {
                controller: REPORTING_CONTROLLER.into(),
                instance: instance.into(),
            },
        }
    }

    /// Write one event about `regarding`.
    pub async fn publish(&self, regarding: ObjectReference, what: Note<'_>) {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace_for(&regarding));
        let name = regarding.name.clone().unwrap_or_default();
        let event = new_event(
            regarding,
            &what,
            &self.reporter,
            MicroTime(Timestamp::now()),
        );
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(object = %name, reason = %what.reason, error = %e, "could not write the event");
        }
    }
}

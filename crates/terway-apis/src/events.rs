//! events.k8s.io/v1 Event objects as every terway-rs component writes them, shaped so that a 1.20 API
//! server accepts them: an event about a cluster-scoped object (Node, PodNetworking) must live in
//! `kube-system` once it carries an `eventTime`, and the note must fit in 1 kB.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

/// Namespace of events about cluster-scoped objects.
pub const CLUSTER_EVENT_NAMESPACE: &str = "kube-system";
/// The longest note the API server takes.
pub const MAX_NOTE: usize = 1024;

/// The namespace an event about `regarding` is written to.
pub fn namespace_for(regarding: &ObjectReference) -> String {
    regarding
        .namespace
        .clone()
        .unwrap_or_else(|| CLUSTER_EVENT_NAMESPACE.into())
}

/// Who writes an event.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// `reportingController`, e.g. `terway.alibabacloud.com/terwayd`.
    pub controller: String,
    /// `reportingInstance`, e.g. `terwayd-node1`.
    pub instance: String,
}

/// What an event says.
#[derive(Debug, Clone)]
pub struct Note<'a> {
    /// `Normal` or `Warning`.
    pub type_: &'a str,
    /// Machine-readable reason (`SyncPodNetworkingFailed`).
    pub reason: &'a str,
    /// What the reporter was doing (`Validate`, `AllocIP`).
    pub action: &'a str,
    /// Human-readable text; cut at [`MAX_NOTE`].
    pub note: &'a str,
}

/// A new event about `regarding` at `stamp`, named `<object>.<nanoseconds in hex>` as kubelet names
/// its events.
pub fn new_event(
    regarding: ObjectReference,
    what: &Note<'_>,
    by: &Reporter,
    stamp: MicroTime,
) -> Event {
    let base = regarding.name.clone().unwrap_or_else(|| "object".into());
    let nanos = stamp.0.as_nanosecond();
    let mut note = what.note.to_string();
    if note.len() > MAX_NOTE {
        let mut cut = MAX_NOTE - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{base}.{nanos:x}")),
            namespace: Some(namespace_for(&regarding)),
            ..Default::default()
        },
        event_time: Some(stamp),
        action: Some(what.action.into()),
        reason: Some(what.reason.into()),
        note: Some(note),
        regarding: Some(regarding),
        reporting_controller: Some(by.controller.clone()),
        reporting_instance: Some(by.instance.clone()),
        type_: Some(what.type_.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn cluster_scoped_objects_get_kube_system_and_long_notes_are_cut() {
        let regarding = ObjectReference {
            kind: Some("PodNetworking".into()),
            name: Some("pn".into()),
            ..Default::default()
        };
        let long = "é".repeat(800);
        let e = new_event(
            regarding,
            &Note {
                type_: "Warning",
                reason: "R",
                action: "A",
                note: &long,
            },
            &Reporter {
                controller: "c".into(),
                instance: "i".into(),
            },
            MicroTime(Timestamp::UNIX_EPOCH),
        );
        assert_eq!(
            e.metadata.namespace.as_deref(),
            Some(CLUSTER_EVENT_NAMESPACE)
        );
        assert_eq!(e.metadata.name.as_deref(), Some("pn.0"));
        let note = e.note.unwrap_or_default();
        assert!(
            note.len() <= MAX_NOTE && note.ends_with("..."),
            "{}",
            note.len()
        );
    }
}

//! Intents: what the daemon was about to ask the cloud, written before the call and cleared after
//! its result is recorded. On start every leftover intent is finished or rolled back.

use std::net::Ipv4Addr;

/// An unfinished cloud operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Intent {
    /// Unique id (also put on a created ENI as tag `terway.intent`).
    pub id: String,
    /// What was attempted.
    pub kind: IntentKind,
    /// When (unix ms).
    pub at_ms: u64,
}

impl Intent {
    /// A fresh intent with a random id.
    pub fn new(kind: IntentKind, at_ms: u64) -> Intent {
        Intent {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            at_ms,
        }
    }
}

/// Kinds of intents.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum IntentKind {
    /// CreateNetworkInterface (+ attach) in a vSwitch; `eni_id` once the create returned.
    CreateEni {
        /// vSwitch.
        vswitch_id: String,
        /// The created ENI, once known.
        eni_id: Option<String>,
    },
    /// AssignPrivateIpAddresses.
    AssignIps {
        /// ENI.
        eni_id: String,
        /// Requested count.
        count: u32,
    },
    /// UnassignPrivateIpAddresses.
    UnassignIps {
        /// ENI.
        eni_id: String,
        /// Addresses.
        ips: Vec<Ipv4Addr>,
    },
    /// Detach + DeleteNetworkInterface.
    DeleteEni {
        /// ENI.
        eni_id: String,
    },
}

//! NetworkPolicy (networking.k8s.io/v1) and ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2)
//! semantics, pure: no I/O, no clock, no kernel.
//!
//! Two independent readings of the same API:
//! - [`compile`] turns the policies, pods and namespaces of a cluster into per-pod rule sets whose peers are
//!   resolved to addresses — the form a node enforces (sets keyed by pod IP);
//! - [`oracle::allowed`] answers one question — may `src` reach `dst` on this port and protocol? — straight
//!   from the API's wording, evaluating selectors against labels at the moment of the question.
//!
//! [`nft`] renders the compiled form as a node's nftables table and diffs one state of it to the next.
//!
//! They share only the input model ([`model`]); label selectors are parsed by the compiler and interpreted
//! raw by the oracle, so a misreading in either shows up as a disagreement ([`gen`] makes the cases).

#![warn(missing_docs)]

pub mod cluster;
pub mod compile;
pub mod explain;
pub mod gen;
pub mod gen_cluster;
pub mod model;
pub mod nft;
pub mod oracle;
pub mod ranges;
pub mod selector;
pub mod upstream;

pub use cluster::{TierRule, Tiers};
pub use compile::{compile, Compiled, CompiledRule, PeerMatch, PodRules, PortMatch, Rules};
pub use model::{Endpoint, NamedPort, Namespace, Node, Pod, Proto, World};
pub use terway_apis::{Action, ClusterNetworkPolicy, Tier};

/// Why a policy cannot be compiled. The API server validates policies, so these are what slipped past it
/// (or a client that bypassed validation); each names the policy and the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A label selector with an unknown operator or values that do not fit it.
    #[error("policy {policy}: {what}")]
    Selector {
        /// `namespace/name` of the policy.
        policy: String,
        /// What is wrong.
        what: String,
    },
    /// A CIDR, protocol or port that does not parse.
    #[error("policy {policy}: {what}")]
    Invalid {
        /// `namespace/name` of the policy.
        policy: String,
        /// What is wrong.
        what: String,
    },
}

//! Kernel datapath for Terway pods: ensure-style netlink/tc/sysctl/netns primitives (public and generic, so the
//! lab fabric reuses them) and the per-mode pod drivers (policy-route veth, ipvlan, exclusive ENI, VPC route).

pub mod addr;
pub mod driver;
pub mod error;
pub mod link;
pub mod neigh;
pub mod netns;
pub mod nl;
pub mod route;
pub mod rule;
pub mod sysctl;
pub mod tc;
pub mod testbed;

pub use error::{Context, Error, ErrorList, Result};
pub use link::{Link, MacAddr};
pub use netns::Netns;
pub use nl::Netlink;

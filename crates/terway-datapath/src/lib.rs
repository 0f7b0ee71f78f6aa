//! Kernel datapath for Terway pods: ensure-style netlink/tc/sysctl/netns primitives (public and generic, so the
//! lab fabric reuses them) and the per-mode pod drivers (policy-route veth, ipvlan, exclusive ENI, VPC route).
//!
//! Primitives, one module per kernel object, all taking a [`Netlink`] bound to one namespace:
//! - [`netns`] — [`Netns::create_named`] / [`Netns::open`] / [`Netns::delete_named`], [`Netns::run`] (closure on a
//!   thread inside the namespace);
//! - [`link`] — `create_veth`/`ensure_veth` (peer straight into another namespace), `create_ipvlan`,
//!   `create_macvlan`/`ensure_macvlan`, `move_to_netns` (+rename), `update_link` (name, MTU, MAC, up, alias,
//!   NOARP), `link_by_name`/`_index`/`_mac`, `wait_link_by_mac`, `remove_link(_by_name)`;
//! - [`addr`] — `ensure_addr`, `set_addrs` (exactly these), `remove_addr`, `list_addrs`;
//! - [`route`] — [`route::Route`] (main or numbered table, onlink, scope) with `ensure_route`/`remove_route`/`list_routes`;
//! - [`rule`] — [`rule::Rule`] (priority, from/to/iif/oif, table) with `ensure_rule`/`remove_rule`/`remove_rules_where`;
//! - [`neigh`] — `ensure_permanent_neighbour`/`remove_neighbour`/`list_neighbours`;
//! - [`sysctl`] — `ensure_sysctl(s)`/`read_sysctl` inside a namespace;
//! - [`tc`] — `ensure_tbf`, `ensure_clsact`, the ipvlan u32 redirect filter, `list_qdiscs`/`list_filters`;
//! - [`conntrack`] — `flush_addresses` (every entry a pod IP is part of, over ctnetlink), `entries_of`, `list`.
//!
//! Ensure operations tolerate existing state, remove operations tolerate missing state.
//!
//! ```no_run
//! # async fn demo() -> terway_datapath::Result<()> {
//! use terway_datapath::{addr, link, route, Netlink, Netns};
//! let node = Netns::create_named("lab-node1")?;
//! let vpc = Netns::create_named("lab-vpc")?;
//! let nl = Netlink::open(&node)?;
//! let eth0 = link::ensure_veth(&nl, "eth0", "node1", Some(&vpc), Some(1500), None).await?;
//! addr::ensure_addr(&nl, eth0.index, "10.0.0.10/24".parse().unwrap(), addr::Scope::Universe).await?;
//! link::set_up(&nl, eth0.index).await?;
//! let gw = "10.0.0.253".parse().unwrap();
//! route::ensure_route(&nl, &route::Route::via_onlink(route::Route::default_dst(&gw), gw, eth0.index)).await?;
//! Netns::delete_named("lab-node1")?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod addr;
pub mod conntrack;
pub mod driver;
pub mod error;
pub mod link;
pub mod mac;
pub mod neigh;
pub mod netns;
pub mod nft;
pub mod nl;
pub mod route;
pub mod rule;
pub mod symmetric;
pub mod sysctl;
pub mod tc;
#[cfg(feature = "testbed")]
pub mod testbed;

pub use error::{Context, Error, ErrorList, Result};
pub use link::{Link, MacAddr};
pub use netns::Netns;
pub use nl::Netlink;

//! Interface addresses: list, ensure (create-or-replace), remove, and "exactly these" for a link.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::nl::{tolerate, Netlink, ACK, CREATE_REPLACE, EADDRNOTAVAIL, ENODEV};

/// Address / route scope, the subset we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scope {
    /// Global (`scope global`).
    #[default]
    Universe,
    /// `scope link`.
    Link,
    /// `scope host`.
    Host,
}

impl From<Scope> for AddressScope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Universe => AddressScope::Universe,
            Scope::Link => AddressScope::Link,
            Scope::Host => AddressScope::Host,
        }
    }
}

impl Scope {
    fn from_addr(s: AddressScope) -> Self {
        match s {
            AddressScope::Link => Scope::Link,
            AddressScope::Host => Scope::Host,
            _ => Scope::Universe,
        }
    }
}

/// One address on one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    /// Link index.
    pub index: u32,
    /// Address with prefix length.
    pub net: IpNet,
    /// Scope.
    pub scope: Scope,
}

fn family(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn message(index: u32, net: IpNet, scope: Scope) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(&net.addr());
    m.header.prefix_len = net.prefix_len();
    m.header.index = index;
    m.header.scope = scope.into();
    if net.addr().is_ipv4() {
        m.attributes.push(AddressAttribute::Local(net.addr()));
        m.attributes.push(AddressAttribute::Address(net.addr()));
    } else {
        // Addresses we assign are unique by construction (the cloud allocated them): skip DAD so they are
        // usable at once instead of tentative for a second.
        m.attributes.push(AddressAttribute::Address(net.addr()));
        m.header.flags = AddressHeaderFlags::Nodad;
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    m
}

/// All addresses, optionally only those of link `index`.
pub async fn list_addrs(nl: &Netlink, index: Option<u32>) -> Result<Vec<Addr>> {
    let msgs = nl
        .dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            || "list addresses".into(),
        )
        .await?;
    let mut out = Vec::new();
    for m in msgs {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        if index.is_some_and(|i| i != a.header.index) {
            continue;
        }
        // IPv4 carries the interface address in IFA_LOCAL; IPv6 only in IFA_ADDRESS.
        let ip = a
            .attributes
            .iter()
            .find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            })
            .or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
        if let Some(ip) = ip {
            if let Ok(net) = IpNet::new(ip, a.header.prefix_len) {
                out.push(Addr {
                    index: a.header.index,
                    net,
                    scope: Scope::from_addr(a.header.scope),
                });
            }
        }
    }
    Ok(out)
}

/// Make sure `net` is on link `index` with `scope` (created or replaced).
pub async fn ensure_addr(nl: &Netlink, index: u32, net: IpNet, scope: Scope) -> Result<()> {
    nl.execute(
        RouteNetlinkMessage::NewAddress(message(index, net, scope)),
        CREATE_REPLACE,
        || format!("add address {net} to link {index}"),
    )
    .await
}

/// Remove `net` from link `index`; absent is fine.
pub async fn remove_addr(nl: &Netlink, index: u32, net: IpNet) -> Result<()> {
    let r = nl
        .execute(
            RouteNetlinkMessage::DelAddress(message(index, net, Scope::Universe)),
            ACK,
            || format!("delete address {net} from link {index}"),
        )
        .await;
    tolerate(r, &[EADDRNOTAVAIL, ENODEV])
}

/// Make `wanted` the only global-scope addresses of their families on link `index` (link-local IPv6 and
/// addresses of other families are left alone), then ensure each wanted one.
pub async fn set_addrs(nl: &Netlink, index: u32, wanted: &[(IpNet, Scope)]) -> Result<()> {
    for a in list_addrs(nl, Some(index)).await? {
        let same_family = wanted
            .iter()
            .any(|(w, _)| w.addr().is_ipv4() == a.net.addr().is_ipv4());
        let link_local =
            matches!(a.net.addr(), IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if same_family && !link_local && !wanted.iter().any(|(w, s)| *w == a.net && *s == a.scope) {
            remove_addr(nl, index, a.net).await?;
        }
    }
    for (net, scope) in wanted {
        ensure_addr(nl, index, *net, *scope).await?;
    }
    Ok(())
}

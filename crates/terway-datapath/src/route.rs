//! Routes in the main or numbered tables: ensure (create-or-replace), remove, list.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::addr::Scope;
use crate::error::{Error, Result};
use crate::nl::{tolerate, Netlink, ACK, CREATE_REPLACE, ENODEV, ENOENT, ESRCH};

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;

/// A unicast route as we program it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (`0.0.0.0/0` for a default route).
    pub dst: IpNet,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Routing table id.
    pub table: u32,
    /// Scope.
    pub scope: Scope,
    /// Next hop is on-link even though no address covers it.
    pub onlink: bool,
    /// Preferred source address.
    pub src: Option<IpAddr>,
}

impl Route {
    /// `dst dev oif scope link` in the main table.
    pub fn link_scope(dst: IpNet, oif: u32) -> Self {
        Route {
            dst,
            gateway: None,
            oif: Some(oif),
            table: MAIN_TABLE,
            scope: Scope::Link,
            onlink: false,
            src: None,
        }
    }

    /// `dst via gw dev oif onlink` in the main table.
    pub fn via_onlink(dst: IpNet, gw: IpAddr, oif: u32) -> Self {
        Route {
            dst,
            gateway: Some(gw),
            oif: Some(oif),
            table: MAIN_TABLE,
            scope: Scope::Universe,
            onlink: true,
            src: None,
        }
    }

    /// Same route in table `table`.
    pub fn in_table(mut self, table: u32) -> Self {
        self.table = table;
        self
    }

    /// The default route of `gw`'s family.
    pub fn default_dst(gw: &IpAddr) -> IpNet {
        match gw {
            IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
            IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
        }
    }

    fn message(&self) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = if self.dst.addr().is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.destination_prefix_length = self.dst.prefix_len();
        m.header.protocol = RouteProtocol::Boot;
        m.header.kind = RouteType::Unicast;
        m.header.scope = match self.scope {
            Scope::Universe => RouteScope::Universe,
            Scope::Link => RouteScope::Link,
            Scope::Host => RouteScope::Host,
        };
        if self.table < 256 {
            m.header.table = self.table as u8;
        } else {
            m.header.table = RouteHeader::RT_TABLE_UNSPEC;
        }
        m.attributes.push(RouteAttribute::Table(self.table));
        if self.onlink {
            m.header.flags = RouteFlags::Onlink;
        }
        if self.dst.prefix_len() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    self.dst.addr(),
                )));
        }
        if let Some(gw) = self.gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = self.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(src) = self.src {
            m.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
        }
        m
    }

    fn from_message(m: &RouteMessage) -> Option<Self> {
        let ip = |a: &RouteAddress| match a {
            RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
            RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
            _ => None,
        };
        let v4 = m.header.address_family == AddressFamily::Inet;
        let mut dst_ip: IpAddr = if v4 {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        };
        let mut r = Route {
            dst: IpNet::new(dst_ip, 0).ok()?,
            gateway: None,
            oif: None,
            table: m.header.table as u32,
            scope: match m.header.scope {
                RouteScope::Link => Scope::Link,
                RouteScope::Host => Scope::Host,
                _ => Scope::Universe,
            },
            onlink: m.header.flags.contains(RouteFlags::Onlink),
            src: None,
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => dst_ip = ip(d)?,
                RouteAttribute::Gateway(g) => r.gateway = ip(g),
                RouteAttribute::Oif(o) => r.oif = Some(*o),
                RouteAttribute::Table(t) => r.table = *t,
                RouteAttribute::PrefSource(s) => r.src = ip(s),
                _ => {}
            }
        }
        r.dst = IpNet::new(dst_ip, m.header.destination_prefix_length).ok()?;
        Some(r)
    }

    /// True if `other` is the same route in the sense the kernel keys them (table, dst) and all the
    /// attributes we set match.
    pub fn matches(&self, other: &Route) -> bool {
        self.dst == other.dst
            && self.table == other.table
            && self.gateway == other.gateway
            && (self.oif.is_none() || self.oif == other.oif)
            // IPv6 has no route scopes: the kernel reports every IPv6 route as universe.
            && (self.scope == other.scope || self.dst.addr().is_ipv6())
            && self.onlink == other.onlink
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if let Some(o) = self.oif {
            write!(f, " dev #{o}")?;
        }
        if self.scope == Scope::Link {
            f.write_str(" scope link")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        write!(f, " table {}", self.table)
    }
}

/// Unicast routes of one family in `table` (`None` = every table).
pub async fn list_routes(nl: &Netlink, v4: bool, table: Option<u32>) -> Result<Vec<Route>> {
    let mut q = RouteMessage::default();
    q.header.address_family = if v4 {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let msgs = nl
        .dump(RouteNetlinkMessage::GetRoute(q), || "list routes".into())
        .await?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) if r.header.kind == RouteType::Unicast => {
                Route::from_message(r)
            }
            _ => None,
        })
        .filter(|r| table.is_none_or(|t| t == r.table))
        .collect())
}

/// Make sure `route` exists exactly (create or replace the route with the same table+destination).
pub async fn ensure_route(nl: &Netlink, route: &Route) -> Result<()> {
    if route
        .gateway
        .is_some_and(|g| g.is_ipv4() != route.dst.addr().is_ipv4())
    {
        return Err(Error::Invalid(format!(
            "route {route} mixes address families"
        )));
    }
    nl.execute(
        RouteNetlinkMessage::NewRoute(route.message()),
        CREATE_REPLACE,
        || format!("add route {route}"),
    )
    .await
}

/// Remove `route` (matched by table, destination and, when set, gateway/oif); absent is fine.
pub async fn remove_route(nl: &Netlink, route: &Route) -> Result<()> {
    let mut m = route.message();
    // Deleting by scope would miss a route installed with a different scope; let the kernel match loosely.
    m.header.scope = RouteScope::NoWhere;
    m.header.flags = RouteFlags::empty();
    let r = nl
        .execute(RouteNetlinkMessage::DelRoute(m), ACK, || {
            format!("delete route {route}")
        })
        .await;
    tolerate(r, &[ESRCH, ENOENT, ENODEV])
}

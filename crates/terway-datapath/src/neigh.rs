//! Permanent neighbour entries (the pod's static ARP entry for its link-local gateway).

use std::net::IpAddr;

use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::link::MacAddr;
use crate::nl::{tolerate, Netlink, ACK, CREATE_REPLACE, ENODEV, ENOENT};

/// A neighbour entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Link index.
    pub index: u32,
    /// Protocol address.
    pub ip: IpAddr,
    /// Link-layer address.
    pub mac: Option<MacAddr>,
    /// NUD_PERMANENT.
    pub permanent: bool,
}

fn message(index: u32, ip: IpAddr, mac: Option<MacAddr>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(v) => NeighbourAddress::Inet(v),
        IpAddr::V6(v) => NeighbourAddress::Inet6(v),
    }));
    if let Some(mac) = mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    m
}

/// Neighbours of link `index` (all families).
pub async fn list_neighbours(nl: &Netlink, index: u32) -> Result<Vec<Neighbour>> {
    let msgs = nl
        .dump(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            || "list neighbours".into(),
        )
        .await?;
    let mut out = Vec::new();
    for m in msgs {
        let RouteNetlinkMessage::NewNeighbour(n) = m else {
            continue;
        };
        if n.header.ifindex != index {
            continue;
        }
        let mut ip = None;
        let mut mac = None;
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                    ip = Some(IpAddr::V4(*v))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                    ip = Some(IpAddr::V6(*v))
                }
                NeighbourAttribute::LinkLayerAddress(v) => {
                    mac = <[u8; 6]>::try_from(v.as_slice()).ok().map(MacAddr)
                }
                _ => {}
            }
        }
        if let Some(ip) = ip {
            out.push(Neighbour {
                index,
                ip,
                mac,
                permanent: n.header.state == NeighbourState::Permanent,
            });
        }
    }
    Ok(out)
}

/// Make `ip lladdr mac` a permanent neighbour on link `index` (create or replace).
pub async fn ensure_permanent_neighbour(
    nl: &Netlink,
    index: u32,
    ip: IpAddr,
    mac: MacAddr,
) -> Result<()> {
    nl.execute(
        RouteNetlinkMessage::NewNeighbour(message(index, ip, Some(mac))),
        CREATE_REPLACE,
        || format!("add permanent neighbour {ip} lladdr {mac} on link {index}"),
    )
    .await
}

/// Remove the neighbour `ip` on link `index`; absent is fine.
pub async fn remove_neighbour(nl: &Netlink, index: u32, ip: IpAddr) -> Result<()> {
    let r = nl
        .execute(
            RouteNetlinkMessage::DelNeighbour(message(index, ip, None)),
            ACK,
            || format!("delete neighbour {ip} on link {index}"),
        )
        .await;
    tolerate(r, &[ENOENT, ENODEV])
}

//! Links: lookup by name/index/MAC, veth/ipvlan/macvlan creation (optionally straight into another
//! namespace), move, rename, MAC, MTU, up/down, alias, delete. All removals tolerate a missing link.

use rtnetlink::packet_core::NLM_F_REQUEST;
use rtnetlink::packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoVeth, IpVlanFlags, IpVlanMode, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, MacVlanMode, State,
};
use rtnetlink::packet_route::RouteNetlinkMessage;

pub use crate::mac::MacAddr;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::nl::{tolerate, Netlink, ACK, CREATE_EXCL, ENODEV};

/// What the kernel reports about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address (absent for e.g. `lo` on some kernels).
    pub mac: Option<MacAddr>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// IFF_NOARP set.
    pub noarp: bool,
    /// Operationally up (IFLA_OPERSTATE): carrier present and the kernel's link watcher has activated
    /// the device's queue, so packets sent now are not dropped.
    pub oper_up: bool,
    /// Link kind (`veth`, `ipvlan`, `macvlan`, …); `None` for physical devices.
    pub kind: Option<String>,
    /// `ifalias`, used to remember an exclusive ENI's original name.
    pub alias: Option<String>,
    /// IFLA_LINK: the peer (veth) or parent (ipvlan/macvlan) index, possibly in another namespace.
    pub parent_index: Option<u32>,
}

impl Link {
    pub(crate) fn from_message(m: &LinkMessage) -> Self {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            noarp: m.header.flags.contains(LinkFlags::Noarp),
            oper_up: false,
            kind: None,
            alias: None,
            parent_index: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(v) => l.mac = MacAddr::from_slice(v),
                LinkAttribute::Mtu(v) => l.mtu = *v,
                LinkAttribute::IfAlias(v) => l.alias = Some(v.clone()),
                LinkAttribute::OperState(s) => l.oper_up = *s == State::Up,
                LinkAttribute::Link(v) => l.parent_index = Some(*v),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

fn msg_with(index: u32, attrs: Vec<LinkAttribute>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes = attrs;
    m
}

/// Every link in the namespace.
pub async fn list_links(nl: &Netlink) -> Result<Vec<Link>> {
    let msgs = nl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), || {
            "list links".into()
        })
        .await?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
            _ => None,
        })
        .collect())
}

async fn get_one(nl: &Netlink, m: LinkMessage, what: &str) -> Result<Option<Link>> {
    let r = nl
        .query(RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST, || {
            format!("get link {what}")
        })
        .await;
    match r {
        Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
            _ => None,
        })),
        Err(e) if e.errno() == Some(ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The link called `name`, if any.
pub async fn link_by_name(nl: &Netlink, name: &str) -> Result<Option<Link>> {
    get_one(
        nl,
        msg_with(0, vec![LinkAttribute::IfName(name.to_string())]),
        name,
    )
    .await
}

/// The link with index `index`, if any.
pub async fn link_by_index(nl: &Netlink, index: u32) -> Result<Option<Link>> {
    get_one(nl, msg_with(index, vec![]), &format!("index {index}")).await
}

/// The link called `name`, or [`Error::LinkNotFound`].
pub async fn require_link(nl: &Netlink, name: &str) -> Result<Link> {
    link_by_name(nl, name)
        .await?
        .ok_or_else(|| Error::LinkNotFound(format!("{name} (in {})", nl.namespace())))
}

/// Wait until link `index` is operationally up. Bringing a veth up is not enough: the kernel activates
/// its queue from a deferred worker (which waits for the RTNL lock on a busy host), and until then
/// every packet sent on it is dropped.
pub async fn wait_oper_up(nl: &Netlink, index: u32, timeout: std::time::Duration) -> Result<Link> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let link = link_by_index(nl, index)
            .await?
            .ok_or_else(|| Error::LinkNotFound(format!("index {index} (in {})", nl.namespace())))?;
        if link.oper_up {
            return Ok(link);
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::LinkNotReady(format!(
                "{} (in {}) is still not operationally up after {} ms; check that its peer is up",
                link.name,
                nl.namespace(),
                timeout.as_millis()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// The link whose hardware address is `mac`, ignoring ipvlan slaves (which share their parent's MAC).
pub async fn link_by_mac(nl: &Netlink, mac: MacAddr) -> Result<Option<Link>> {
    Ok(list_links(nl)
        .await?
        .into_iter()
        .find(|l| l.mac == Some(mac) && l.kind.as_deref() != Some("ipvlan")))
}

/// Poll for the link with `mac` (an ENI that was just attached may take a moment to appear).
pub async fn wait_link_by_mac(
    nl: &Netlink,
    mac: MacAddr,
    attempts: u32,
    interval: std::time::Duration,
) -> Result<Link> {
    for i in 0..attempts.max(1) {
        if let Some(l) = link_by_mac(nl, mac).await? {
            return Ok(l);
        }
        if i + 1 < attempts {
            tokio::time::sleep(interval).await;
        }
    }
    Err(Error::EniNotFound {
        mac: mac.to_string(),
        attempts: attempts.max(1),
    })
}

/// Build the RTM_NEWLINK message for a veth pair; the peer is created in `peer_ns` when given.
pub fn veth_message(
    name: &str,
    peer_name: &str,
    peer_ns: Option<&Netns>,
    mtu: Option<u32>,
    peer_mac: Option<MacAddr>,
) -> LinkMessage {
    let mut peer = msg_with(0, vec![LinkAttribute::IfName(peer_name.to_string())]);
    if let Some(ns) = peer_ns {
        peer.attributes.push(LinkAttribute::NetNsFd(ns.raw_fd()));
    }
    if let Some(m) = mtu {
        peer.attributes.push(LinkAttribute::Mtu(m));
    }
    if let Some(mac) = peer_mac {
        peer.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    let mut attrs = vec![LinkAttribute::IfName(name.to_string())];
    if let Some(m) = mtu {
        attrs.push(LinkAttribute::Mtu(m));
    }
    attrs.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    msg_with(0, attrs)
}

/// Create a veth pair `name` (here) ↔ `peer_name` (in `peer_ns`, or here). Fails if `name` exists.
pub async fn create_veth(
    nl: &Netlink,
    name: &str,
    peer_name: &str,
    peer_ns: Option<&Netns>,
    mtu: Option<u32>,
    peer_mac: Option<MacAddr>,
) -> Result<Link> {
    let m = veth_message(name, peer_name, peer_ns, mtu, peer_mac);
    nl.execute(RouteNetlinkMessage::NewLink(m), CREATE_EXCL, || {
        format!("create veth {name} peer {peer_name}")
    })
    .await?;
    require_link(nl, name).await
}

/// Index of `lo` in every network namespace: the kernel registers it first and reserves index 1 for it.
pub const LOOPBACK_INDEX: u32 = 1;

/// Create a veth pair `name` (here) ↔ `peer_name` (in `peer_ns`) with `name` administratively up in the
/// same request (the kernel applies the `ifi_flags` once both ends exist). The peer cannot be created up:
/// the kernel opens it before the pair is joined and answers ENOTCONN. Fails with EEXIST if either name is
/// taken; the caller looks the links up.
pub async fn create_veth_up(
    nl: &Netlink,
    name: &str,
    peer_name: &str,
    peer_ns: &Netns,
    mtu: u32,
) -> Result<()> {
    let mut m = veth_message(name, peer_name, Some(peer_ns), Some(mtu), None);
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    nl.execute(RouteNetlinkMessage::NewLink(m), CREATE_EXCL, || {
        format!("create veth {name} peer {peer_name}")
    })
    .await
}

/// Ensure a veth `name` exists here: an existing veth of that name is kept as is (its peer is not
/// re-checked), anything else with that name is an error; otherwise the pair is created like
/// [`create_veth`].
pub async fn ensure_veth(
    nl: &Netlink,
    name: &str,
    peer_name: &str,
    peer_ns: Option<&Netns>,
    mtu: Option<u32>,
    peer_mac: Option<MacAddr>,
) -> Result<Link> {
    match link_by_name(nl, name).await? {
        Some(l) if l.kind.as_deref() == Some("veth") => Ok(l),
        Some(l) => Err(Error::Invalid(format!(
            "link {name} exists as {} and is not a veth",
            l.kind.as_deref().unwrap_or("a device")
        ))),
        None => create_veth(nl, name, peer_name, peer_ns, mtu, peer_mac).await,
    }
}

/// Build the RTM_NEWLINK message for an ipvlan slave of `parent_index`, created in `target_ns` when given.
pub fn ipvlan_message(
    name: &str,
    parent_index: u32,
    mode: IpVlanMode,
    target_ns: Option<&Netns>,
    mtu: Option<u32>,
) -> LinkMessage {
    let mut attrs = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::Link(parent_index),
    ];
    if let Some(m) = mtu {
        attrs.push(LinkAttribute::Mtu(m));
    }
    if let Some(ns) = target_ns {
        attrs.push(LinkAttribute::NetNsFd(ns.raw_fd()));
    }
    attrs.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::IpVlan),
        LinkInfo::Data(InfoData::IpVlan(vec![
            InfoIpVlan::Mode(mode),
            InfoIpVlan::Flags(IpVlanFlags::empty()),
        ])),
    ]));
    msg_with(0, attrs)
}

/// Create an ipvlan slave. Returns the kernel error unchanged so callers can detect EOPNOTSUPP.
pub async fn create_ipvlan(
    nl: &Netlink,
    name: &str,
    parent_index: u32,
    mode: IpVlanMode,
    target_ns: Option<&Netns>,
    mtu: Option<u32>,
) -> Result<()> {
    let m = ipvlan_message(name, parent_index, mode, target_ns, mtu);
    nl.execute(RouteNetlinkMessage::NewLink(m), CREATE_EXCL, || {
        format!("create ipvlan {name} on ifindex {parent_index}")
    })
    .await
}

/// Create a macvlan (bridge mode) on `parent_index`, in `target_ns` when given.
pub async fn create_macvlan(
    nl: &Netlink,
    name: &str,
    parent_index: u32,
    target_ns: Option<&Netns>,
    mac: Option<MacAddr>,
    mtu: Option<u32>,
) -> Result<()> {
    let mut attrs = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::Link(parent_index),
    ];
    if let Some(m) = mtu {
        attrs.push(LinkAttribute::Mtu(m));
    }
    if let Some(mac) = mac {
        attrs.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    if let Some(ns) = target_ns {
        attrs.push(LinkAttribute::NetNsFd(ns.raw_fd()));
    }
    attrs.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::MacVlan),
        LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
            MacVlanMode::Bridge,
        )])),
    ]));
    nl.execute(
        RouteNetlinkMessage::NewLink(msg_with(0, attrs)),
        CREATE_EXCL,
        || format!("create macvlan {name} on ifindex {parent_index}"),
    )
    .await
}

/// Ensure a macvlan `name` on `parent_index` exists in the namespace of `nl`; an existing macvlan of
/// that name is kept.
pub async fn ensure_macvlan(
    nl: &Netlink,
    name: &str,
    parent_index: u32,
    mac: Option<MacAddr>,
    mtu: Option<u32>,
) -> Result<Link> {
    match link_by_name(nl, name).await? {
        Some(l) if l.kind.as_deref() == Some("macvlan") => Ok(l),
        Some(l) => Err(Error::Invalid(format!(
            "link {name} exists as {} and is not a macvlan",
            l.kind.as_deref().unwrap_or("a device")
        ))),
        None => {
            create_macvlan(nl, name, parent_index, None, mac, mtu).await?;
            require_link(nl, name).await
        }
    }
}

/// A set of changes applied to one link in a single RTM_SETLINK.
#[derive(Default, Debug, Clone)]
pub struct LinkUpdate {
    /// New name.
    pub name: Option<String>,
    /// New MTU.
    pub mtu: Option<u32>,
    /// New MAC.
    pub mac: Option<MacAddr>,
    /// Bring up (`true`) or down (`false`).
    pub up: Option<bool>,
    /// New `ifalias` (empty string clears it).
    pub alias: Option<String>,
    /// Set (`true`) or clear IFF_NOARP.
    pub noarp: Option<bool>,
}

/// Apply `update` to link `index`.
pub async fn update_link(nl: &Netlink, index: u32, update: &LinkUpdate) -> Result<()> {
    let mut m = msg_with(index, vec![]);
    if let Some(n) = &update.name {
        m.attributes.push(LinkAttribute::IfName(n.clone()));
    }
    if let Some(v) = update.mtu {
        m.attributes.push(LinkAttribute::Mtu(v));
    }
    if let Some(mac) = update.mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    if let Some(a) = &update.alias {
        m.attributes.push(LinkAttribute::IfAlias(a.clone()));
    }
    if let Some(up) = update.up {
        m.header.change_mask |= LinkFlags::Up;
        if up {
            m.header.flags |= LinkFlags::Up;
        }
    }
    if let Some(noarp) = update.noarp {
        m.header.change_mask |= LinkFlags::Noarp;
        if noarp {
            m.header.flags |= LinkFlags::Noarp;
        }
    }
    nl.execute(RouteNetlinkMessage::SetLink(m), ACK, || {
        format!("update link {index} {update:?}")
    })
    .await
}

/// Bring link `index` up.
pub async fn set_up(nl: &Netlink, index: u32) -> Result<()> {
    update_link(
        nl,
        index,
        &LinkUpdate {
            up: Some(true),
            ..Default::default()
        },
    )
    .await
}

/// Bring link `index` down.
pub async fn set_down(nl: &Netlink, index: u32) -> Result<()> {
    update_link(
        nl,
        index,
        &LinkUpdate {
            up: Some(false),
            ..Default::default()
        },
    )
    .await
}

/// Set the MTU of link `index`.
pub async fn set_mtu(nl: &Netlink, index: u32, mtu: u32) -> Result<()> {
    update_link(
        nl,
        index,
        &LinkUpdate {
            mtu: Some(mtu),
            ..Default::default()
        },
    )
    .await
}

/// Set the MAC of link `index`.
pub async fn set_mac(nl: &Netlink, index: u32, mac: MacAddr) -> Result<()> {
    update_link(
        nl,
        index,
        &LinkUpdate {
            mac: Some(mac),
            ..Default::default()
        },
    )
    .await
}

/// Rename link `index` (it must be down for most drivers).
pub async fn rename(nl: &Netlink, index: u32, name: &str) -> Result<()> {
    update_link(
        nl,
        index,
        &LinkUpdate {
            name: Some(name.to_string()),
            ..Default::default()
        },
    )
    .await
}

/// Move link `index` into `target`, optionally renaming it on the way (one message, so no name clash
/// can happen in between).
pub async fn move_to_netns(
    nl: &Netlink,
    index: u32,
    target: &Netns,
    new_name: Option<&str>,
) -> Result<()> {
    let mut m = msg_with(index, vec![LinkAttribute::NetNsFd(target.raw_fd())]);
    if let Some(n) = new_name {
        m.attributes.push(LinkAttribute::IfName(n.to_string()));
    }
    nl.execute(RouteNetlinkMessage::SetLink(m), ACK, || {
        format!(
            "move link {index} to {} as {}",
            target.path().display(),
            new_name.unwrap_or("(same name)")
        )
    })
    .await
}

/// Delete link `index`; a missing link is fine.
pub async fn remove_link(nl: &Netlink, index: u32) -> Result<()> {
    let r = nl
        .execute(
            RouteNetlinkMessage::DelLink(msg_with(index, vec![])),
            ACK,
            || format!("delete link {index}"),
        )
        .await;
    tolerate(r, &[ENODEV])
}

/// Delete the link called `name`; a missing link is fine. Returns whether something was deleted.
pub async fn remove_link_by_name(nl: &Netlink, name: &str) -> Result<bool> {
    match link_by_name(nl, name).await? {
        Some(l) => remove_link(nl, l.index).await.map(|_| true),
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::Emitable;

    #[test]
    fn ipvlan_message_is_l2_slave_of_parent() {
        let m = ipvlan_message("cali0123456789a", 7, IpVlanMode::L2, None, Some(1500));
        assert!(m
            .attributes
            .contains(&LinkAttribute::IfName("cali0123456789a".into())));
        assert!(m.attributes.contains(&LinkAttribute::Link(7)));
        assert!(m.attributes.contains(&LinkAttribute::Mtu(1500)));
        let info = m.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(i) => Some(i.clone()),
            _ => None,
        });
        let info = info.unwrap();
        assert_eq!(info[0], LinkInfo::Kind(InfoKind::IpVlan));
        assert_eq!(
            info[1],
            LinkInfo::Data(InfoData::IpVlan(vec![
                InfoIpVlan::Mode(IpVlanMode::L2),
                InfoIpVlan::Flags(IpVlanFlags::empty())
            ]))
        );
        // The wire form carries IFLA_INFO_KIND "ipvlan" and IFLA_IPVLAN_MODE = 0 (L2).
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let hay = String::from_utf8_lossy(&buf);
        assert!(hay.contains("ipvlan"));
        // IFLA_IPVLAN_MODE nla: len 6, type 1, value 0u16.
        assert!(buf.windows(6).any(|w| w == [6, 0, 1, 0, 0, 0]));
    }

    #[test]
    fn veth_message_puts_peer_in_target() {
        let m = veth_message("calia", "eth0", None, Some(1400), None);
        let peer = m.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(i) => i.iter().find_map(|x| match x {
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p.clone()),
                _ => None,
            }),
            _ => None,
        });
        let peer = peer.unwrap();
        assert!(peer
            .attributes
            .contains(&LinkAttribute::IfName("eth0".into())));
        assert!(peer.attributes.contains(&LinkAttribute::Mtu(1400)));
    }
}

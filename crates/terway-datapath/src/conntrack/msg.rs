//! ctnetlink wire format: the two requests the flush sends (a dump of one family, a delete by tuple) and
//! the parts of a conntrack entry it reads back. Hand-built like the tc messages in `tc.rs`: no crate for
//! `NETLINK_NETFILTER` conntrack is in the dependency tree, and the subset needed is small.
//!
//! Layout (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`, `nfnetlink_conntrack.h`): `nlmsghdr` (native
//! endian) + `nfgenmsg` {family, version 0, res_id big endian} + attributes. Addresses, ports, zone and id
//! are big endian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `NFNL_SUBSYS_CTNETLINK`.
const SUBSYS_CTNETLINK: u16 = 1;
/// `IPCTNL_MSG_CT_NEW`: what a dump answers with.
const MSG_CT_NEW: u16 = 0;
/// `IPCTNL_MSG_CT_GET`.
const MSG_CT_GET: u16 = 1;
/// `IPCTNL_MSG_CT_DELETE`.
const MSG_CT_DELETE: u16 = 2;

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// `AF_UNSPEC`: a dump of every family.
pub const AF_UNSPEC: u8 = 0;
/// `AF_INET`.
pub const AF_INET: u8 = 2;
/// `AF_INET6`.
pub const AF_INET6: u8 = 10;

/// The address family of `ip` as ctnetlink names it.
pub fn family_of(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

/// One of a connection's four addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// Source of the original direction (the pod opened the connection).
    OrigSrc,
    /// Destination of the original direction (someone connected to the pod directly).
    OrigDst,
    /// Source of the reply direction (the pod answers a DNATed connection, e.g. through a Service).
    ReplySrc,
    /// Destination of the reply direction (the pod's connection was SNATed back to it).
    ReplyDst,
}

impl Position {
    /// All four.
    pub const ALL: [Position; 4] = [
        Position::OrigSrc,
        Position::OrigDst,
        Position::ReplySrc,
        Position::ReplyDst,
    ];
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Position::OrigSrc => "original source",
            Position::OrigDst => "original destination",
            Position::ReplySrc => "reply source",
            Position::ReplyDst => "reply destination",
        })
    }
}

/// One direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP, UDP, SCTP, …).
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
}

/// A conntrack entry as much of it as the flush needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, …).
    pub proto: u8,
    /// Original direction.
    pub orig: Tuple,
    /// Reply direction.
    pub reply: Tuple,
    /// Conntrack zone, when not the default one.
    pub zone: Option<u16>,
    /// Kernel id of the entry, so a delete removes exactly the entry that was dumped.
    pub id: Option<u32>,
    /// The `CTA_TUPLE_ORIG` attribute exactly as the kernel sent it; echoed in the delete request so every
    /// protocol (ports, ICMP ids, …) is identified without this code knowing its attributes.
    orig_attr: Vec<u8>,
}

impl Entry {
    /// The address at `pos`.
    pub fn at(&self, pos: Position) -> IpAddr {
        match pos {
            Position::OrigSrc => self.orig.src,
            Position::OrigDst => self.orig.dst,
            Position::ReplySrc => self.reply.src,
            Position::ReplyDst => self.reply.dst,
        }
    }

    /// Whether `ip` is any of the connection's four addresses.
    pub fn involves(&self, ip: IpAddr) -> bool {
        Position::ALL.iter().any(|p| self.at(*p) == ip)
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

fn message(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&((SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.push(family);
    b.push(0); // NFNETLINK_V0
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(attrs);
    b
}

/// A dump of every entry of `family`.
pub fn dump_all_request(seq: u32, family: u8) -> Vec<u8> {
    message(MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family, &[])
}

/// Delete exactly `e` (its original tuple, zone and id), acknowledged.
pub fn delete_request(seq: u32, e: &Entry) -> Vec<u8> {
    let mut attrs = e.orig_attr.clone();
    attrs.resize(align4(attrs.len()), 0);
    if let Some(z) = e.zone {
        put_attr(&mut attrs, CTA_ZONE, &z.to_be_bytes());
    }
    if let Some(id) = e.id {
        put_attr(&mut attrs, CTA_ID, &id.to_be_bytes());
    }
    message(
        MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        e.family,
        &attrs,
    )
}

/// One netlink message of a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// A conntrack entry (part of a dump).
    Entry(Entry),
    /// A conntrack message this code does not read.
    Other,
    /// `NLMSG_ERROR`: 0 is an acknowledgement, otherwise the negative errno.
    Ack(i32),
    /// `NLMSG_DONE`: the dump is complete; non-zero is the negative errno that ended it early.
    Done(i32),
}

/// Iterate over the attributes in `b`: (type without flags, payload, whole attribute).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let (whole, payload) = (&b[..len], &b[4..len]);
        b = &b[align4(len).min(b.len())..];
        Some((kind, payload, whole))
    })
}

fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let a: [u8; 16] = b.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

fn be16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

fn parse_tuple(b: &[u8]) -> Option<(Tuple, u8)> {
    let (mut src, mut dst, mut sport, mut dport, mut proto) = (None, None, None, None, 0);
    for (kind, payload, _) in attrs(b) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, v, _) in attrs(payload) {
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = parse_ip(v),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = parse_ip(v),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, v, _) in attrs(payload) {
                    match k {
                        CTA_PROTO_NUM => proto = *v.first()?,
                        CTA_PROTO_SRC_PORT => sport = be16(v),
                        CTA_PROTO_DST_PORT => dport = be16(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        Tuple {
            src: src?,
            dst: dst?,
            sport,
            dport,
        },
        proto,
    ))
}

fn parse_entry(family: u8, b: &[u8]) -> Option<Entry> {
    let (mut orig, mut reply, mut zone, mut id) = (None, None, None, None);
    for (kind, payload, whole) in attrs(b) {
        match kind {
            CTA_TUPLE_ORIG => orig = parse_tuple(payload).map(|t| (t, whole.to_vec())),
            CTA_TUPLE_REPLY => reply = parse_tuple(payload).map(|(t, _)| t),
            CTA_ZONE => zone = be16(payload),
            CTA_ID => {
                id = payload
                    .get(..4)
                    .and_then(|v| v.try_into().ok())
                    .map(u32::from_be_bytes)
            }
            _ => {}
        }
    }
    let ((orig, proto), orig_attr) = orig?;
    Some(Entry {
        family,
        proto,
        orig,
        reply: reply?,
        zone: zone.filter(|z| *z != 0),
        id,
        orig_attr,
    })
}

fn i32_at(b: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// Split one received datagram into its messages. A truncated or malformed message ends the datagram.
pub fn parse_datagram(mut b: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        if len < NLMSG_HDRLEN || len > b.len() {
            break;
        }
        let body = &b[NLMSG_HDRLEN..len];
        out.push(match kind {
            NLMSG_ERROR => Reply::Ack(i32_at(body).unwrap_or(-nix::libc::EPROTO)),
            NLMSG_DONE => Reply::Done(i32_at(body).unwrap_or(0)),
            k if k == (SUBSYS_CTNETLINK << 8) | MSG_CT_NEW && body.len() >= NFGENMSG_LEN => {
                match parse_entry(body[0], &body[NFGENMSG_LEN..]) {
                    Some(e) => Reply::Entry(e),
                    None => Reply::Other,
                }
            }
            _ => Reply::Other,
        });
        b = &b[align4(len).min(b.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NLA_F_NESTED: u16 = 1 << 15;
    fn nested(kind: u16, children: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + children.len());
        put_attr(&mut v, kind | NLA_F_NESTED, children);
        v
    }

    fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
        match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    fn tuple_attr(
        kind: u16,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        sport: u16,
        dport: u16,
    ) -> Vec<u8> {
        let (s, d) = if src.is_ipv4() {
            (CTA_IP_V4_SRC, CTA_IP_V4_DST)
        } else {
            (CTA_IP_V6_SRC, CTA_IP_V6_DST)
        };
        let mut ip = Vec::new();
        put_attr(&mut ip, s, &ip_bytes(&src));
        put_attr(&mut ip, d, &ip_bytes(&dst));
        let mut p = Vec::new();
        put_attr(&mut p, CTA_PROTO_NUM, &[proto]);
        put_attr(&mut p, CTA_PROTO_SRC_PORT, &sport.to_be_bytes());
        put_attr(&mut p, CTA_PROTO_DST_PORT, &dport.to_be_bytes());
        let mut t = nested(CTA_TUPLE_IP, &ip);
        t.extend(nested(CTA_TUPLE_PROTO, &p));
        nested(kind, &t)
    }

    /// What the kernel sends for a DNATed TCP connection 10.0.0.1:40000 → 172.21.0.10:80, answered by the
    /// pod 10.0.0.5:8080.
    fn kernel_entry() -> Vec<u8> {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut a = tuple_attr(
            CTA_TUPLE_ORIG,
            ip("10.0.0.1"),
            ip("172.21.0.10"),
            6,
            40000,
            80,
        );
        a.extend(tuple_attr(
            CTA_TUPLE_REPLY,
            ip("10.0.0.5"),
            ip("10.0.0.1"),
            6,
            8080,
            40000,
        ));
        put_attr(&mut a, CTA_ID, &0x01020304u32.to_be_bytes());
        let mut m = message(MSG_CT_NEW, 0x2, 7, AF_INET, &a);
        // NLMSG_DONE carries the dump's final status (0) where nfgenmsg would be.
        let mut done = message(0, 0x2, 7, 0, &[]);
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend(done);
        m
    }

    #[test]
    fn parses_a_dnat_entry_and_finds_the_pod_in_the_reply_source() {
        let r = parse_datagram(&kernel_entry());
        assert_eq!(r.len(), 2, "{r:?}");
        let Reply::Entry(e) = &r[0] else {
            panic!("{r:?}")
        };
        assert_eq!(e.proto, 6);
        assert_eq!(e.orig.dport, Some(80));
        assert_eq!(e.reply.sport, Some(8080));
        assert_eq!(e.id, Some(0x01020304));
        assert_eq!(e.zone, None);
        let pod: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(e.at(Position::ReplySrc), pod);
        assert!(e.involves(pod));
        assert!(!e.involves("10.0.0.6".parse().unwrap()));
        assert_eq!(r[1], Reply::Done(0));
    }

    #[test]
    fn delete_echoes_the_original_tuple_and_the_id() {
        let Reply::Entry(e) = parse_datagram(&kernel_entry()).remove(0) else {
            panic!()
        };
        let d = delete_request(9, &e);
        assert_eq!(
            u32::from_ne_bytes(d[0..4].try_into().unwrap()) as usize,
            d.len()
        );
        assert_eq!(u16::from_ne_bytes([d[4], d[5]]), (1 << 8) | 2);
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(d[16], AF_INET);
        let body = &d[20..];
        let kinds: Vec<u16> = attrs(body).map(|(k, _, _)| k).collect();
        assert_eq!(kinds, [CTA_TUPLE_ORIG, CTA_ID]);
        let (_, orig, _) = attrs(body).next().unwrap();
        assert_eq!(parse_tuple(orig).unwrap().0, e.orig);
    }

    #[test]
    fn dump_asks_for_every_entry_of_one_family() {
        let d = dump_all_request(3, AF_INET6);
        assert_eq!(d.len(), 20);
        assert_eq!(u32::from_ne_bytes(d[0..4].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes([d[4], d[5]]), (1 << 8) | 1);
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u32::from_ne_bytes(d[8..12].try_into().unwrap()), 3);
        assert_eq!(d[16], AF_INET6);
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..64 {
            let b: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            let _ = parse_datagram(&b);
        }
        let mut e = kernel_entry();
        e.truncate(40);
        let _ = parse_datagram(&e);
    }
}

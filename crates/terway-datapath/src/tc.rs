//! Traffic control: tbf root qdisc (pod bandwidth), clsact, and the u32 redirect filter of the ipvlan mode.
//!
//! netlink-packet-route has no typed tbf/clsact/skbedit support, so those are hand-built `TcMessage`s with
//! raw option attributes (`TCA_TBF_PARMS` = `struct tc_tbf_qopt`, `TCA_TBF_BURST`, …).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rtnetlink::packet_core::{DefaultNla, Nla};
use rtnetlink::packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionTunnelKeyOption, TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage,
    TcMirror, TcMirrorActionType, TcOption, TcTunnelKey, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};
use rtnetlink::packet_route::RouteNetlinkMessage;

use crate::error::Result;
use crate::nl::{tolerate, Netlink, ACK, CREATE_EXCL, CREATE_REPLACE, EEXIST, EINVAL_, ENOENT};

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// Kernel packet-scheduler tick is 64 ns (PSCHED_SHIFT 6).
const PSCHED_NS_PER_TICK: u64 = 64;
const TCA_SKBEDIT_PARMS: u16 = 2;
const TCA_SKBEDIT_PTYPE: u16 = 7;
const PACKET_HOST: u16 = 0;
const TCA_TUNNEL_KEY_ACT_RELEASE: i32 = 2;
const ETH_P_IP: u16 = 0x0800;

/// Token bucket parameters in bytes (already computed by the QoS maths).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tbf {
    /// Rate in bytes per second.
    pub rate: u64,
    /// Bucket size in bytes.
    pub burst: u32,
    /// Queue limit in bytes.
    pub limit: u32,
}

impl Tbf {
    /// Ticks needed to send `burst` bytes at `rate` (`tc`'s "buffer").
    pub fn buffer_ticks(&self) -> u32 {
        if self.rate == 0 {
            return 0;
        }
        let ns = (self.burst as u128 * 1_000_000_000u128) / self.rate as u128;
        (ns / PSCHED_NS_PER_TICK as u128).min(u32::MAX as u128) as u32
    }

    /// `struct tc_tbf_qopt` (36 bytes, native endian).
    pub fn qopt_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(36);
        // rate: cell_log, linklayer, overhead, cell_align, mpu, rate
        b.push(0);
        b.push(TC_LINKLAYER_ETHERNET);
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&0i16.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&(self.rate.min(u32::MAX as u64) as u32).to_ne_bytes());
        b.extend_from_slice(&[0u8; 12]); // peakrate: unset
        b.extend_from_slice(&self.limit.to_ne_bytes());
        b.extend_from_slice(&self.buffer_ticks().to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // mtu: no peak rate
        b
    }

    fn options(&self) -> Vec<TcOption> {
        let mut o = vec![TcOption::Other(DefaultNla::new(
            TCA_TBF_PARMS,
            self.qopt_bytes(),
        ))];
        if self.rate >= u32::MAX as u64 {
            o.push(TcOption::Other(DefaultNla::new(
                TCA_TBF_RATE64,
                self.rate.to_ne_bytes().to_vec(),
            )));
        }
        o.push(TcOption::Other(DefaultNla::new(
            TCA_TBF_BURST,
            self.burst.to_ne_bytes().to_vec(),
        )));
        o
    }

    /// Parse the kernel's TCA_TBF_PARMS back into (rate, limit, burst derived from buffer).
    fn from_options(opts: &[TcOption]) -> Option<Self> {
        let mut rate = None;
        let mut rate64 = None;
        let mut limit = 0;
        let mut buffer = 0u32;
        for (kind, v) in raw_options(opts) {
            match kind {
                TCA_TBF_PARMS if v.len() >= 36 => {
                    rate = Some(u32::from_ne_bytes(v[8..12].try_into().ok()?) as u64);
                    limit = u32::from_ne_bytes(v[24..28].try_into().ok()?);
                    buffer = u32::from_ne_bytes(v[28..32].try_into().ok()?);
                }
                TCA_TBF_RATE64 if v.len() >= 8 => {
                    rate64 = Some(u64::from_ne_bytes(v[..8].try_into().ok()?))
                }
                _ => {}
            }
        }
        let rate = rate64.or(rate)?;
        let burst = ((buffer as u128 * PSCHED_NS_PER_TICK as u128 * rate as u128)
            / 1_000_000_000u128) as u32;
        Some(Tbf { rate, burst, limit })
    }
}

/// Flatten raw options into (type, value) pairs. Options we built are separate NLAs; options parsed from the
/// kernel for kinds the library does not know arrive as one `TCA_OPTIONS` NLA holding the nested ones.
fn raw_options(opts: &[TcOption]) -> Vec<(u16, Vec<u8>)> {
    const TCA_OPTIONS: u16 = 2;
    let mut out = Vec::new();
    for o in opts {
        let TcOption::Other(nla) = o else { continue };
        let mut v = vec![0u8; nla.value_len()];
        nla.emit_value(&mut v);
        if nla.kind() == TCA_OPTIONS && opts.len() == 1 {
            let mut rest = v.as_slice();
            while rest.len() >= 4 {
                let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
                let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
                if len < 4 || len > rest.len() {
                    break;
                }
                out.push((kind, rest[4..len].to_vec()));
                let padded = (len + 3) & !3;
                rest = &rest[padded.min(rest.len())..];
            }
        } else {
            out.push((nla.kind(), v));
        }
    }
    out
}

/// A qdisc as listed by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qdisc {
    /// Link index.
    pub index: u32,
    /// Kind (`tbf`, `clsact`, `noqueue`, …).
    pub kind: String,
    /// Handle (major:minor packed).
    pub handle: u32,
    /// Parent (`0xffffffff` = root).
    pub parent: u32,
    /// tbf parameters, when `kind == "tbf"` (burst rounded by the kernel's tick maths).
    pub tbf: Option<Tbf>,
}

impl Qdisc {
    /// True for a root qdisc.
    pub fn is_root(&self) -> bool {
        self.parent == u32::MAX
    }
}

fn handle_u32(h: TcHandle) -> u32 {
    ((h.major as u32) << 16) | h.minor as u32
}

/// Qdiscs on link `index`.
pub async fn list_qdiscs(nl: &Netlink, index: u32) -> Result<Vec<Qdisc>> {
    let msgs = nl
        .dump(
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
            || "list qdiscs".into(),
        )
        .await?;
    let mut out = Vec::new();
    for m in msgs {
        let RouteNetlinkMessage::NewQueueDiscipline(q) = m else {
            continue;
        };
        if q.header.index as u32 != index {
            continue;
        }
        let mut kind = String::new();
        let mut opts = Vec::new();
        for a in &q.attributes {
            match a {
                TcAttribute::Kind(k) => kind = k.clone(),
                TcAttribute::Options(o) => opts = o.clone(),
                _ => {}
            }
        }
        let tbf = if kind == "tbf" {
            Tbf::from_options(&opts)
        } else {
            None
        };
        out.push(Qdisc {
            index,
            kind,
            handle: handle_u32(q.header.handle),
            parent: handle_u32(q.header.parent),
            tbf,
        });
    }
    Ok(out)
}

/// Build the RTM_NEWQDISC message for a root tbf with handle 1:.
pub fn tbf_message(index: u32, tbf: &Tbf) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::ROOT;
    m.header.handle = TcHandle { major: 1, minor: 0 };
    m.attributes.push(TcAttribute::Kind("tbf".into()));
    m.attributes.push(TcAttribute::Options(tbf.options()));
    m
}

/// Make a tbf with `tbf` the root qdisc of link `index` (replacing whatever root qdisc is there).
pub async fn ensure_tbf(nl: &Netlink, index: u32, tbf: &Tbf) -> Result<()> {
    nl.execute(
        RouteNetlinkMessage::NewQueueDiscipline(tbf_message(index, tbf)),
        CREATE_REPLACE,
        || {
            format!(
                "set tbf root qdisc rate {}B/s burst {} limit {} on link {index}",
                tbf.rate, tbf.burst, tbf.limit
            )
        },
    )
    .await
}

/// Delete the root qdisc of link `index` (back to the default); none is fine.
pub async fn remove_root_qdisc(nl: &Netlink, index: u32) -> Result<()> {
    if !list_qdiscs(nl, index)
        .await?
        .iter()
        .any(|q| q.is_root() && q.kind != "noqueue" && q.handle != 0)
    {
        return Ok(());
    }
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::ROOT;
    let r = nl
        .execute(RouteNetlinkMessage::DelQueueDiscipline(m), ACK, || {
            format!("delete root qdisc on link {index}")
        })
        .await;
    tolerate(r, &[ENOENT, EINVAL_])
}

/// Ensure a clsact qdisc on link `index`.
pub async fn ensure_clsact(nl: &Netlink, index: u32) -> Result<()> {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::CLSACT;
    m.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    m.attributes.push(TcAttribute::Kind("clsact".into()));
    let r = nl
        .execute(
            RouteNetlinkMessage::NewQueueDiscipline(m),
            CREATE_EXCL,
            || format!("add clsact on link {index}"),
        )
        .await;
    tolerate(r, &[EEXIST])
}

/// Remove the clsact qdisc (and with it every tc filter) of link `index`; none is fine.
pub async fn remove_clsact(nl: &Netlink, index: u32) -> Result<()> {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::CLSACT;
    m.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    let r = nl
        .execute(RouteNetlinkMessage::DelQueueDiscipline(m), ACK, || {
            format!("delete clsact on link {index}")
        })
        .await;
    tolerate(r, &[ENOENT, EINVAL_])
}

fn generic(action: TcActionType) -> TcActionGeneric {
    let mut g = TcActionGeneric::default();
    g.action = action;
    g
}

fn tunnel_release() -> TcTunnelKey {
    TcTunnelKey {
        generic: generic(TcActionType::Pipe),
        t_action: TCA_TUNNEL_KEY_ACT_RELEASE,
    }
}

fn mirred_ingress(target_index: u32) -> TcMirror {
    let mut m = TcMirror::default();
    m.generic = generic(TcActionType::Stolen);
    m.eaction = TcMirrorActionType::IngressRedir;
    m.ifindex = target_index;
    m
}

fn action(tab: u16, kind: &str, options: Vec<TcActionOption>) -> TcAction {
    let mut a = TcAction::default();
    a.tab = tab;
    a.attributes = vec![
        TcActionAttribute::Kind(kind.into()),
        TcActionAttribute::Options(options),
    ];
    a
}

/// `tc_gen`-only skbedit parameters (index, capab, action, refcnt, bindcnt).
fn skbedit_parms(act: i32) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&act.to_ne_bytes());
    v.extend_from_slice(&0i32.to_ne_bytes());
    v.extend_from_slice(&0i32.to_ne_bytes());
    v
}

/// Which actions the redirect filter carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectActions {
    /// Terway's chain: `tunnel_key unset` → `skbedit ptype host` → `mirred ingress redirect`.
    HostStack,
    /// Only `mirred ingress redirect` (kernels built without act_skbedit/act_tunnel_key).
    MirredOnly,
}

/// Build the egress u32 filter of the ipvlan mode: IPv4 packets to `dst` (optionally get `tunnel_key unset`
/// and `skbedit ptype host`, then) are redirected into `target_index`'s ingress so the host stack sees them.
pub fn redirect_filter_message(
    index: u32,
    priority: u16,
    dst: Ipv4Net,
    target_index: u32,
    actions: RedirectActions,
) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle {
        major: 0xffff,
        minor: TcHandle::MIN_EGRESS,
    };
    m.header.info = ((priority as u32) << 16) | ETH_P_IP.to_be() as u32;
    let mut key = TcU32Key::default();
    key.mask = u32::from(dst.netmask());
    key.val = u32::from(dst.network());
    key.off = 16;
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![key];
    let tunnel = action(
        1,
        "tunnel_key",
        vec![TcActionOption::TunnelKey(TcActionTunnelKeyOption::Parms(
            tunnel_release(),
        ))],
    );
    let skbedit = action(
        2,
        "skbedit",
        vec![
            TcActionOption::Other(DefaultNla::new(
                TCA_SKBEDIT_PARMS,
                skbedit_parms(3 /* TC_ACT_PIPE */),
            )),
            TcActionOption::Other(DefaultNla::new(
                TCA_SKBEDIT_PTYPE,
                PACKET_HOST.to_ne_bytes().to_vec(),
            )),
        ],
    );
    let mirred = action(
        3,
        "mirred",
        vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirred_ingress(target_index),
        ))],
    );
    m.attributes.push(TcAttribute::Kind("u32".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(sel)),
        TcOption::U32(TcFilterU32Option::Action(match actions {
            RedirectActions::HostStack => vec![tunnel, skbedit, mirred],
            RedirectActions::MirredOnly => {
                let mut m = mirred;
                m.tab = 1;
                vec![m]
            }
        })),
    ]));
    m
}

/// A tc filter as listed by the kernel (only what we need to find ours).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Kind (`u32`, `bpf`, …).
    pub kind: String,
    /// Priority.
    pub priority: u16,
    /// Parent (clsact egress = ffff:fff3).
    pub parent: u32,
}

/// Filters on link `index` under `parent` (e.g. clsact egress `0xfffffff3`).
pub async fn list_filters(nl: &Netlink, index: u32, parent: u32) -> Result<Vec<Filter>> {
    let mut q = TcMessage::with_index(index as i32);
    q.header.parent = TcHandle::from(parent);
    let msgs = nl
        .dump(RouteNetlinkMessage::GetTrafficFilter(q), || {
            format!("list filters on link {index}")
        })
        .await?;
    let mut out = Vec::new();
    for m in msgs {
        let RouteNetlinkMessage::NewTrafficFilter(f) = m else {
            continue;
        };
        let kind = f.attributes.iter().find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        });
        if let Some(kind) = kind {
            let f = Filter {
                kind,
                priority: (f.header.info >> 16) as u16,
                parent: handle_u32(f.header.parent),
            };
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// Clsact egress parent handle.
pub const CLSACT_EGRESS: u32 = 0xffff_fff3;

/// Add the ipvlan host-stack redirect filter for `dst` on link `index` (clsact must exist).
pub async fn ensure_redirect_filter(
    nl: &Netlink,
    index: u32,
    priority: u16,
    dst: Ipv4Net,
    target_index: u32,
    actions: RedirectActions,
) -> Result<()> {
    let m = redirect_filter_message(index, priority, dst, target_index, actions);
    let r = nl
        .execute(RouteNetlinkMessage::NewTrafficFilter(m), CREATE_EXCL, || {
            format!("add u32 redirect filter prio {priority} dst {dst} on link {index} to link {target_index}")
        })
        .await;
    tolerate(r, &[EEXIST])
}

/// Delete every filter of priority `priority` on link `index`'s clsact egress; none is fine.
pub async fn remove_filters(nl: &Netlink, index: u32, priority: u16) -> Result<()> {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::from(CLSACT_EGRESS);
    // Protocol 0 matches the filter whatever protocol it was added with.
    m.header.info = (priority as u32) << 16;
    let r = nl
        .execute(RouteNetlinkMessage::DelTrafficFilter(m), ACK, || {
            format!("delete filters prio {priority} on link {index}")
        })
        .await;
    tolerate(r, &[ENOENT, EINVAL_])
}

/// The v4 address a u32 key at offset 16 matches (for tests and checks).
pub fn key_dst(key: &TcU32Key) -> (Ipv4Addr, Ipv4Addr) {
    (Ipv4Addr::from(key.val), Ipv4Addr::from(key.mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_qopt_layout() {
        let t = Tbf {
            rate: 1_250_000,
            burst: 3000,
            limit: 34_250,
        };
        let b = t.qopt_bytes();
        assert_eq!(b.len(), 36);
        assert_eq!(b[1], 1, "linklayer ethernet so no rate table is needed");
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 1_250_000);
        assert_eq!(u32::from_ne_bytes(b[24..28].try_into().unwrap()), 34_250);
        // 3000 B at 1.25 MB/s = 2.4 ms = 37500 ticks of 64 ns.
        assert_eq!(t.buffer_ticks(), 37_500);
        let back = Tbf::from_options(&t.options()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn redirect_filter_matches_dst_and_redirects_to_ingress() {
        let m = redirect_filter_message(
            4,
            40000,
            "10.96.0.0/12".parse().unwrap(),
            9,
            RedirectActions::HostStack,
        );
        assert_eq!(m.header.info >> 16, 40000);
        assert_eq!(
            m.header.parent,
            TcHandle {
                major: 0xffff,
                minor: 0xfff3
            }
        );
        let TcAttribute::Options(opts) = &m.attributes[1] else {
            panic!()
        };
        let TcOption::U32(TcFilterU32Option::Selector(sel)) = &opts[0] else {
            panic!()
        };
        assert_eq!(
            key_dst(&sel.keys[0]),
            ("10.96.0.0".parse().unwrap(), "255.240.0.0".parse().unwrap())
        );
        assert_eq!(sel.keys[0].off, 16);
        let TcOption::U32(TcFilterU32Option::Action(acts)) = &opts[1] else {
            panic!()
        };
        let kinds: Vec<_> = acts
            .iter()
            .map(|a| match &a.attributes[0] {
                TcActionAttribute::Kind(k) => k.clone(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(kinds, ["tunnel_key", "skbedit", "mirred"]);
    }
}

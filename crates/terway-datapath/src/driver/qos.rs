//! Pod bandwidth with tbf (reference §8.1): egress on the pod's interface, ingress as the root qdisc of the
//! host veth. The burst/limit maths live in `terway_core::tbf_params`.

use super::Bandwidth;
use crate::error::{Error, Result};
use crate::link::Link;
use crate::nl::Netlink;
use crate::tc::{self, Tbf};

/// tbf parameters for `rate` bytes/s on a link with `mtu`.
pub fn tbf_for(rate: u64, mtu: u32) -> Result<Tbf> {
    let p = terway_core::tbf_params(rate, mtu)
        .map_err(|e| Error::Invalid(format!("bandwidth {rate} B/s: {e}")))?;
    Ok(Tbf {
        rate: p.rate,
        burst: u32::try_from(p.burst).unwrap_or(u32::MAX),
        limit: u32::try_from(p.limit).unwrap_or(u32::MAX),
    })
}

/// Shape `link`'s egress at `rate` bytes/s, or remove our tbf when `rate` is `None`.
pub async fn ensure_shaping(nl: &Netlink, link: &Link, rate: Option<u64>) -> Result<()> {
    match rate.filter(|r| *r > 0) {
        Some(r) => tc::ensure_tbf(nl, link.index, &tbf_for(r, link.mtu)?).await,
        None => {
            let has_tbf = tc::list_qdiscs(nl, link.index)
                .await?
                .iter()
                .any(|q| q.is_root() && q.kind == "tbf");
            if has_tbf {
                tc::remove_root_qdisc(nl, link.index).await?;
            }
            Ok(())
        }
    }
}

/// Verify `link` is shaped at `rate` (or not shaped when `None`).
pub async fn check_shaping(nl: &Netlink, link: &Link, rate: Option<u64>) -> Result<()> {
    let root = tc::list_qdiscs(nl, link.index)
        .await?
        .into_iter()
        .find(|q| q.is_root());
    let tbf = root.as_ref().and_then(|q| q.tbf);
    match (rate.filter(|r| *r > 0), tbf) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Error::Mismatch(format!(
            "{} has a tbf qdisc but no bandwidth limit is set",
            link.name
        ))),
        (Some(r), None) => Err(Error::Mismatch(format!(
            "{} is not shaped to {r} B/s",
            link.name
        ))),
        (Some(r), Some(t)) => {
            let want = tbf_for(r, link.mtu)?;
            if t.rate != want.rate || t.limit != want.limit {
                return Err(Error::Mismatch(format!(
                    "{} is shaped to {} B/s limit {} instead of {} B/s limit {}",
                    link.name, t.rate, t.limit, want.rate, want.limit
                )));
            }
            Ok(())
        }
    }
}

/// Apply both directions to a veth pair setup has just created. Only the limits that are set are
/// programmed: a new link has no tbf of ours to remove, and looking for one costs a qdisc dump per end.
pub async fn apply_to_new_pair(
    host_nl: &Netlink,
    host_link: Option<&Link>,
    pod_nl: &Netlink,
    pod_link: &Link,
    bw: Bandwidth,
) -> Result<()> {
    if bw.egress.is_some_and(|r| r > 0) {
        ensure_shaping(pod_nl, pod_link, bw.egress).await?;
    }
    if let (Some(h), true) = (host_link, bw.ingress.is_some_and(|r| r > 0)) {
        ensure_shaping(host_nl, h, bw.ingress).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_follows_terway_core_maths() {
        // 10 Mbit/s = 1.25 MB/s on MTU 1500: burst = max(1250, 3000) = 3000, limit = 31250 + 3000.
        let t = tbf_for(1_250_000, 1500).unwrap();
        assert_eq!(
            t,
            Tbf {
                rate: 1_250_000,
                burst: 3000,
                limit: 34_250
            }
        );
        assert!(tbf_for(0, 1500).is_err());
    }
}

//! Deferred deletion of a pod's host veth ("retiring").
//!
//! Deleting a veth costs ~16 ms of kernel time (`synchronize_net` under RTNL), more than the rest of DEL
//! together. Nothing about correctness or address reuse depends on the veth being gone, only on what
//! references the pod IP on the host: rules 512/2048, the /32 route, neighbours. DEL therefore removes
//! those synchronously, then *retires* the host veth instead of deleting it: one RTM_SETLINK sets it down
//! (the kernel flushes its routes and neighbours, so the pod can no longer send with the released IP) and
//! tags it with the alias `terway-deleting:<unix seconds>:<container id>`.
//!
//! Who deletes it afterwards:
//! - normally the runtime, which removes the pod netns right after DEL; the kernel destroys both ends of
//!   the pair with the namespace, asynchronously and batched;
//! - if the runtime never removes the netns, [`sweep_retired`] (run by every GC of the plugin, and by an ADD
//!   or DEL when the last sweep is [`SWEEP_INTERVAL`] old: one link dump filtered by alias) deletes retired
//!   veths older than [`RETIRE_GRACE`];
//! - a new sandbox of the same pod reuses the host veth name: ADD deletes whatever holds that name first
//!   (`create_veth_pair`), paying the deletion in that rare case.
//!
//! Why not a detached child process that deletes the veth: it would race the runtime's netns removal and the
//! next ADD of the same pod for the same name, holds RTNL while the runtime is measuring the next call, and
//! a killed child leaks silently; the alias makes every leftover visible and the sweep idempotent.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Context, ErrorList, Result};
use crate::link::{self, LinkUpdate};
use crate::nl::Netlink;

/// Prefix of the `ifalias` of a retired host veth.
pub const RETIRED_ALIAS_PREFIX: &str = "terway-deleting:";

/// Age after which the sweep deletes a retired veth the runtime has not destroyed with its netns.
pub const RETIRE_GRACE: Duration = Duration::from_secs(30);

/// How long ADD and DEL go without a sweep. A sweep dumps every link of the node, which grows with its pods
/// (a few hundred veths cost more than the rest of an ADD's netlink work), while a retired veth becomes due
/// only [`RETIRE_GRACE`] after DEL, so sweeping on every call buys nothing.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Name of the file in the plugin's lock directory whose modification time is the last sweep.
const SWEEP_STAMP: &str = "retired-sweep.stamp";

/// Whether a sweep is due: the stamp in `lock_dir` is missing or at least `every` old. A due sweep is
/// recorded at once, so concurrent plugins rarely both sweep (and a double sweep is harmless). A lock
/// directory that cannot record the stamp makes every call sweep, as before there was a stamp.
pub fn sweep_due(lock_dir: &Path, every: Duration) -> bool {
    let stamp = lock_dir.join(SWEEP_STAMP);
    let recent = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < every);
    if recent {
        return false;
    }
    let _ = std::fs::create_dir_all(lock_dir);
    if let Err(e) = std::fs::write(&stamp, b"") {
        tracing::debug!(stamp = %stamp.display(), error = %e, "cannot record the retired-veth sweep; sweeping on every call");
    }
    true
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The alias that marks a veth retired at `secs` by sandbox `container_id`.
pub fn retired_alias(secs: u64, container_id: &str) -> String {
    // IFALIASZ is 256 bytes; container ids are 64 hex characters, truncate anything longer.
    let mut a = format!("{RETIRED_ALIAS_PREFIX}{secs}:{container_id}");
    a.truncate(255);
    a
}

/// When the veth with `alias` was retired, or `None` if it is not a retired veth.
pub fn retired_at(alias: &str) -> Option<u64> {
    let rest = alias.strip_prefix(RETIRED_ALIAS_PREFIX)?;
    rest.split(':').next()?.parse().ok()
}

/// Retire host veth `name`: set it down and tag it for deletion. Returns whether the veth existed (a link of
/// that name that is not a veth is not ours and is left alone).
pub async fn retire_host_veth(nl: &Netlink, name: &str, container_id: &str) -> Result<bool> {
    let Some(l) = super::owner::host_veth(nl, name).await? else {
        return Ok(false);
    };
    link::update_link(
        nl,
        l.index,
        &LinkUpdate {
            up: Some(false),
            alias: Some(retired_alias(now_secs(), container_id)),
            ..Default::default()
        },
    )
    .await
    .context(|| format!("retire host veth {name} of sandbox {container_id}"))?;
    Ok(true)
}

/// Delete retired veths older than `grace` (or with an unreadable timestamp). Returns how many were deleted.
pub async fn sweep_retired(nl: &Netlink, grace: Duration) -> Result<usize> {
    let now = now_secs();
    let mut errs = ErrorList::new();
    let mut n = 0;
    for l in link::list_links(nl).await? {
        let Some(alias) = l.alias.as_deref() else {
            continue;
        };
        if !alias.starts_with(RETIRED_ALIAS_PREFIX) || l.kind.as_deref() != Some("veth") {
            continue;
        }
        let old = retired_at(alias).is_none_or(|t| now.saturating_sub(t) >= grace.as_secs());
        if old {
            errs.collect(
                link::remove_link(nl, l.index)
                    .await
                    .context(|| format!("delete retired veth {} ({alias})", l.name)),
            );
            n += 1;
        }
    }
    errs.into_result().map(|_| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_due_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let locks = dir.path().join("locks");
        assert!(sweep_due(&locks, Duration::from_secs(60)), "no stamp yet");
        assert!(
            !sweep_due(&locks, Duration::from_secs(60)),
            "swept just now"
        );
        assert!(sweep_due(&locks, Duration::ZERO), "the interval has passed");
    }

    #[test]
    fn alias_round_trip() {
        let a = retired_alias(1234, "abc");
        assert_eq!(a, "terway-deleting:1234:abc");
        assert_eq!(retired_at(&a), Some(1234));
        assert_eq!(retired_at("terway-deleting:x:abc"), None);
        assert_eq!(retired_at("eth0-original"), None);
        assert!(retired_alias(1, &"c".repeat(400)).len() <= 255);
    }
}

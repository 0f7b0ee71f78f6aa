//! Per-pod exclusion: one request (AllocIP, ReleaseIP, or a GC release) works on a pod at a time,
//! across every backend, so a release can never race the allocation it undoes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::error::{DaemonError, Result};
use crate::record::PodKey;

/// The set of pods with a request in progress; cheap to clone.
#[derive(Clone, Default)]
pub struct Claims {
    busy: Arc<Mutex<HashSet<PodKey>>>,
}

/// Exclusive right to work on one pod; released on drop.
pub struct PodClaim {
    claims: Claims,
    pod: PodKey,
}

impl Drop for PodClaim {
    fn drop(&mut self) {
        if let Ok(mut c) = self.claims.busy.lock() {
            c.remove(&self.pod);
        }
    }
}

impl Claims {
    /// Claim `pod`; `PodBusy` if another request holds it (the CNI retries).
    pub fn claim(&self, pod: &PodKey) -> Result<PodClaim> {
        let mut c = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !c.insert(pod.clone()) {
            return Err(DaemonError::PodBusy {
                pod: pod.to_string(),
            });
        }
        Ok(PodClaim {
            claims: self.clone(),
            pod: pod.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_claimed_once_until_released() {
        let c = Claims::default();
        let p = PodKey::new("a", "b");
        let g = c.claim(&p).unwrap();
        assert!(matches!(c.claim(&p), Err(DaemonError::PodBusy { .. })));
        assert!(c.claim(&PodKey::new("a", "c")).is_ok());
        drop(g);
        assert!(c.claim(&p).is_ok());
    }
}

//! Allocation inhibits after capacity errors from the cloud (Terway: 1 min after
//! EniPerInstanceLimitExceeded, 10 min after IpNotEnough / QuotaExceeded), kept as deadlines so they
//! expire by themselves and can be shown in status and metrics.

use std::collections::BTreeMap;

/// Active inhibits, as unix-ms deadlines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inhibits {
    /// No ENI creation before this time.
    pub eni_limit_until_ms: Option<u64>,
    /// vSwitches that reported no free IP, and until when they are skipped.
    pub vswitch_blocked_until_ms: BTreeMap<String, u64>,
}

impl Inhibits {
    /// Record EniPerInstanceLimitExceeded.
    pub fn eni_limit_hit(&mut self, now_ms: u64, for_ms: u64) {
        self.eni_limit_until_ms = Some(now_ms + for_ms);
    }

    /// Record IpNotEnough on a vSwitch.
    pub fn vswitch_exhausted(&mut self, vswitch_id: &str, now_ms: u64, for_ms: u64) {
        self.vswitch_blocked_until_ms
            .insert(vswitch_id.to_string(), now_ms + for_ms);
    }

    /// Forget expired inhibits.
    pub fn expire(&mut self, now_ms: u64) {
        if self.eni_limit_until_ms.is_some_and(|t| t <= now_ms) {
            self.eni_limit_until_ms = None;
        }
        self.vswitch_blocked_until_ms.retain(|_, t| *t > now_ms);
    }

    /// Why ENI creation is blocked right now, if it is.
    pub fn create_blocked(&self, now_ms: u64) -> Option<String> {
        self.eni_limit_until_ms.filter(|t| *t > now_ms).map(|t| {
            format!(
                "the instance hit its ENI limit (EniPerInstanceLimitExceeded); new ENIs are inhibited for {} s more",
                (t - now_ms).div_ceil(1000)
            )
        })
    }

    /// Whether a vSwitch is skipped right now.
    pub fn vswitch_blocked(&self, vswitch_id: &str, now_ms: u64) -> bool {
        self.vswitch_blocked_until_ms
            .get(vswitch_id)
            .is_some_and(|t| *t > now_ms)
    }

    /// Human-readable list of what is active.
    pub fn describe(&self, now_ms: u64) -> Vec<String> {
        let mut out: Vec<String> = self.create_blocked(now_ms).into_iter().collect();
        for (vsw, t) in &self.vswitch_blocked_until_ms {
            if *t > now_ms {
                out.push(format!(
                    "vSwitch {vsw} has no free IP (IpNotEnough); skipped for {} s more",
                    (t - now_ms).div_ceil(1000)
                ));
            }
        }
        out
    }

    /// Unblock every vSwitch (an address was returned to the VPC, so capacity may be back).
    pub fn clear_vswitches(&mut self) {
        self.vswitch_blocked_until_ms.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eni_limit_inhibit_expires() {
        let mut i = Inhibits::default();
        assert!(i.create_blocked(0).is_none());
        i.eni_limit_hit(1_000, 60_000);
        let why = i.create_blocked(2_000).unwrap();
        assert!(
            why.contains("EniPerInstanceLimitExceeded") && why.contains("59 s"),
            "{why}"
        );
        assert!(i.create_blocked(61_000).is_none());
        i.expire(61_000);
        assert_eq!(i.eni_limit_until_ms, None);
    }

    #[test]
    fn vswitch_block_is_per_vswitch_and_expires() {
        let mut i = Inhibits::default();
        i.vswitch_exhausted("vsw-a", 0, 600_000);
        assert!(i.vswitch_blocked("vsw-a", 1));
        assert!(!i.vswitch_blocked("vsw-b", 1));
        assert_eq!(i.describe(1).len(), 1);
        assert!(!i.vswitch_blocked("vsw-a", 600_000));
        i.expire(600_000);
        assert!(i.vswitch_blocked_until_ms.is_empty());
        i.vswitch_exhausted("vsw-a", 0, 10);
        i.clear_vswitches();
        assert!(!i.vswitch_blocked("vsw-a", 1));
    }
}

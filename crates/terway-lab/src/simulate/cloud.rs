//! The cloud the simulator runs against, in virtual time: a latency per action, the client's per-API token
//! buckets (terway-cloud's own limiter, fed virtual instants), ENIs whose attach and detach complete after a
//! uniformly random delay (as the emulator does), and a call log shaped like the emulator's.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use terway_cloud::ratelimit::RateLimiter;

/// What the simulated cloud is like.
#[derive(Debug, Clone)]
pub struct CloudModel {
    /// Latency per action, ms (0 for actions not listed).
    pub latency_ms: BTreeMap<String, u64>,
    /// Added to every call, ms: transport, signing, the service's own work.
    pub overhead_ms: u64,
    /// Attaching → InUse, uniform in this range, ms.
    pub attach_ms: (u64, u64),
    /// Detaching → Available, uniform in this range, ms.
    pub detach_ms: (u64, u64),
    /// Per-minute budgets that differ from Terway's defaults (eni_conf `rate_limit`).
    pub rate_limits: BTreeMap<String, u32>,
}

/// The cloud-side state of one ENI.
#[derive(Debug, Clone, Copy)]
struct SimEni {
    /// InUse from this virtual ms (attach accepted).
    attached_at: Option<u64>,
    /// Available again from this virtual ms (detach accepted).
    detached_at: Option<u64>,
}

/// What Describe answers for an ENI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EniStatus {
    /// Created, not attached (or detached).
    Available,
    /// Attach accepted, not done.
    Attaching,
    /// Attached.
    InUse,
    /// Detach accepted, not done.
    Detaching,
}

/// The simulated cloud.
pub struct SimCloud {
    model: CloudModel,
    rng: rand::rngs::StdRng,
    limiter: RateLimiter,
    /// The std instant that virtual time 0 maps to, for the limiter.
    epoch: Instant,
    enis: HashMap<String, SimEni>,
    next_eni: u32,
    next_ip: u32,
    /// Calls as `{"at_ms", "action", "code"}`, like the emulator's `/_emulator/calls`.
    pub calls: Vec<Value>,
    /// Calls the client limiter held back, and for how long in total.
    pub limiter_waits: (u64, Duration),
}

impl SimCloud {
    /// A cloud with no ENIs yet.
    pub fn new(model: CloudModel, seed: u64) -> Self {
        let limiter = RateLimiter::new(&model.rate_limits);
        SimCloud {
            model,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            limiter,
            epoch: Instant::now(),
            enis: HashMap::new(),
            next_eni: 0,
            next_ip: 0,
            calls: Vec::new(),
            limiter_waits: (0, Duration::ZERO),
        }
    }

    /// A call to `action` issued at virtual `now_ms`: how long until its answer (limiter wait + latency).
    pub fn begin(&mut self, action: &str, now_ms: u64) -> Duration {
        let wait = self
            .limiter
            .reserve_at(action, self.epoch + Duration::from_millis(now_ms));
        if !wait.is_zero() {
            self.limiter_waits.0 += 1;
            self.limiter_waits.1 += wait;
        }
        let latency =
            self.model.latency_ms.get(action).copied().unwrap_or(0) + self.model.overhead_ms;
        wait + Duration::from_millis(latency)
    }

    /// Record a call answered at virtual `at_ms`.
    pub fn answered(&mut self, action: &str, at_ms: u64, wall_base_ms: u64) {
        self.calls
            .push(json!({ "at_ms": wall_base_ms + at_ms, "action": action, "code": "OK" }));
    }

    /// A new ENI (Available) with `ips` addresses, the first its primary.
    pub fn create_eni(&mut self, ips: u32) -> (String, Vec<Ipv4Addr>) {
        self.next_eni += 1;
        let id = format!("eni-sim{:06}", self.next_eni);
        self.enis.insert(
            id.clone(),
            SimEni {
                attached_at: None,
                detached_at: None,
            },
        );
        (id, self.addresses(ips))
    }

    /// `n` fresh addresses.
    pub fn addresses(&mut self, n: u32) -> Vec<Ipv4Addr> {
        (0..n)
            .map(|_| {
                self.next_ip += 1;
                Ipv4Addr::from(0x0a10_0000 + self.next_ip)
            })
            .collect()
    }

    /// Accept an attach at `now_ms`; it completes after the model's attach delay.
    pub fn attach(&mut self, eni: &str, now_ms: u64) {
        let (lo, hi) = self.model.attach_ms;
        let d = self.rng.random_range(lo..=hi.max(lo));
        if let Some(e) = self.enis.get_mut(eni) {
            e.attached_at = Some(now_ms + d);
            e.detached_at = None;
        }
    }

    /// Accept a detach at `now_ms`.
    pub fn detach(&mut self, eni: &str, now_ms: u64) {
        let (lo, hi) = self.model.detach_ms;
        let d = self.rng.random_range(lo..=hi.max(lo));
        if let Some(e) = self.enis.get_mut(eni) {
            e.detached_at = Some(now_ms + d);
        }
    }

    /// Delete (immediate, as the emulator's default).
    pub fn delete(&mut self, eni: &str) {
        self.enis.remove(eni);
    }

    /// What Describe says of `eni` at `now_ms` (`None`: no such ENI).
    pub fn status(&self, eni: &str, now_ms: u64) -> Option<EniStatus> {
        let e = self.enis.get(eni)?;
        Some(match (e.attached_at, e.detached_at) {
            (_, Some(t)) if t > now_ms => EniStatus::Detaching,
            (_, Some(_)) | (None, None) => EniStatus::Available,
            (Some(t), None) if t > now_ms => EniStatus::Attaching,
            (Some(_), None) => EniStatus::InUse,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_and_detach_complete_after_their_delay_and_the_limiter_holds_back_a_burst() {
        let model = CloudModel {
            latency_ms: BTreeMap::from([("AttachNetworkInterface".into(), 80)]),
            overhead_ms: 2,
            attach_ms: (1_000, 1_000),
            detach_ms: (300, 300),
            rate_limits: BTreeMap::from([("AttachNetworkInterface".into(), 2)]),
        };
        let mut c = SimCloud::new(model, 1);
        let (id, ips) = c.create_eni(3);
        assert_eq!(ips.len(), 3);
        assert_eq!(c.status(&id, 0), Some(EniStatus::Available));
        c.attach(&id, 100);
        assert_eq!(c.status(&id, 1_099), Some(EniStatus::Attaching));
        assert_eq!(c.status(&id, 1_100), Some(EniStatus::InUse));
        c.detach(&id, 2_000);
        assert_eq!(c.status(&id, 2_200), Some(EniStatus::Detaching));
        assert_eq!(c.status(&id, 2_300), Some(EniStatus::Available));
        c.delete(&id);
        assert_eq!(c.status(&id, 2_300), None);
        // Burst of 2, then one token every 30 s.
        assert_eq!(
            c.begin("AttachNetworkInterface", 0),
            Duration::from_millis(82)
        );
        assert_eq!(
            c.begin("AttachNetworkInterface", 0),
            Duration::from_millis(82)
        );
        assert!(c.begin("AttachNetworkInterface", 0) >= Duration::from_secs(30));
        assert_eq!(c.limiter_waits.0, 1);
        assert_eq!(c.begin("DescribeVSwitches", 0), Duration::from_millis(2));
    }
}

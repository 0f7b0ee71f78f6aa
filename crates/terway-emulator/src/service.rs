//! The emulated cloud as one shared object: the world behind a lock, authentication, throttling,
//! faults, the call log, persistence, and the pipeline one OpenAPI call goes through
//! (action/version → signature → latency → throttle → injected fault → idempotency → action →
//! persist → effects).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::actions::{self, Env, Outcome};
use crate::auth::{Authenticator, Incoming};
use crate::catalogue::{self, InstanceTypeSpec};
use crate::config::{Delays, EmulatorConfig};
use crate::error::{ApiError, EmulatorError};
use crate::faults::{FaultConfig, FiredFault};
use crate::hook::FabricHook;
use crate::params::Params;
use crate::persist::Persister;
use crate::throttle::Throttle;
use crate::world::{TokenRecord, World};

/// Calls kept in the call log (oldest dropped first).
const CALL_LOG_CAPACITY: usize = 100_000;

/// One OpenAPI call as recorded for `GET /_emulator/calls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// RequestId answered.
    pub request_id: String,
    /// Action (empty if missing).
    pub action: String,
    /// AccessKey id that signed it (empty if authentication failed).
    pub access_key_id: String,
    /// Business parameters.
    pub params: BTreeMap<String, String>,
    /// `OK` or the error code.
    pub code: String,
    /// HTTP status.
    pub status: u16,
    /// Time spent in the emulator.
    pub latency_ms: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A raw HTTP request to the OpenAPI endpoint.
pub struct RawRequest {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Headers (name, value).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// What the HTTP layer sends back.
pub struct ApiAnswer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// RequestId (also sent as a header).
    pub request_id: String,
}

impl ApiAnswer {
    /// An error answered before any action is known (HTTP limits, paths the listener does not serve), with
    /// the same body as every other error and a fresh RequestId.
    pub fn error(e: &ApiError) -> Self {
        let request_id = new_request_id();
        Self {
            status: e.status,
            body: e.body(GENERIC_HOST_ID, &request_id),
            request_id,
        }
    }
}

/// HostId of answers that belong to no product yet (no or unknown action).
const GENERIC_HOST_ID: &str = "ecs.aliyuncs.com";

/// A RequestId as the gateway writes them (upper-case UUID).
fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

/// Shared state of a running emulator.
pub struct Service {
    pub(crate) config: EmulatorConfig,
    pub(crate) catalogue: BTreeMap<String, InstanceTypeSpec>,
    pub(crate) world: Mutex<World>,
    generation: Mutex<u64>,
    snapshot: Mutex<Option<(Instant, Arc<World>)>>,
    md_snapshot: Mutex<Option<(Instant, Arc<World>)>>,
    /// ENIs with an operation still "being processed" (see `Delays::eni_busy_ms`).
    busy: Mutex<HashMap<String, Instant>>,
    pub(crate) auth: Mutex<Authenticator>,
    throttle: Mutex<Throttle>,
    faults: Mutex<FaultConfig>,
    fired: Mutex<Vec<FiredFault>>,
    calls: Mutex<VecDeque<CallRecord>>,
    pub(crate) hook: Arc<dyn FabricHook>,
    persister: Persister,
}

/// Lock, recovering from a poisoned lock (a panicking request must not wedge the emulator).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A uniformly random delay in `[min, max]` milliseconds.
pub(crate) fn random_delay(min: u64, max: u64) -> Duration {
    if max <= min {
        return Duration::from_millis(min);
    }
    Duration::from_millis(rand::rng().random_range(min..=max))
}

impl Service {
    /// Build the service: world from the state file if there is one, else from the configuration.
    pub fn new(
        config: EmulatorConfig,
        hook: Arc<dyn FabricHook>,
    ) -> Result<Arc<Self>, EmulatorError> {
        config.validate()?;
        let mut catalogue: BTreeMap<String, InstanceTypeSpec> = catalogue::builtin()
            .into_iter()
            .map(|s| (s.instance_type.clone(), s))
            .collect();
        for extra in &config.instance_types {
            catalogue.insert(extra.instance_type.clone(), extra.clone());
        }
        for inst in &config.instances {
            if !catalogue.contains_key(&inst.instance_type) {
                return Err(EmulatorError::InvalidConfig(format!(
                    "instance {} has unknown instance type {}; add it to instance_types",
                    inst.id, inst.instance_type
                )));
            }
        }
        let persister = Persister::new(config.state_file.clone());
        let world = match persister.load()? {
            Some(w) => w,
            None => {
                World::from_config(&config).map_err(|e| EmulatorError::InvalidConfig(e.message))?
            }
        };
        let svc = Arc::new(Self {
            auth: Mutex::new(Authenticator::new(
                &config.access_keys,
                Duration::from_secs(config.max_clock_skew_secs),
            )),
            throttle: Mutex::new(Throttle::new(config.throttling, config.rate_limits.clone())),
            faults: Mutex::new(config.faults.clone()),
            fired: Mutex::new(Vec::new()),
            calls: Mutex::new(VecDeque::new()),
            generation: Mutex::new(0),
            snapshot: Mutex::new(None),
            md_snapshot: Mutex::new(None),
            busy: Mutex::new(HashMap::new()),
            world: Mutex::new(world),
            catalogue,
            config,
            hook,
            persister,
        });
        svc.persist_now()?;
        Ok(svc)
    }

    /// The delays configured.
    pub(crate) fn delays(&self) -> &Delays {
        &self.config.delays
    }

    fn env(&self) -> Env<'_> {
        Env {
            catalogue: &self.catalogue,
            unattached_eni_ip_limit: self.config.unattached_eni_ip_limit,
            async_delete: self.config.delays.delete_max_ms > 0,
        }
    }

    /// A copy of the whole state.
    pub fn world(&self) -> World {
        lock(&self.world).clone()
    }

    /// Current fault configuration.
    pub fn faults(&self) -> FaultConfig {
        lock(&self.faults).clone()
    }

    /// Replace the fault configuration.
    pub fn set_faults(&self, f: FaultConfig) {
        *lock(&self.faults) = f;
        *lock(&self.snapshot) = None;
        *lock(&self.md_snapshot) = None;
    }

    /// Replace the rate limits at runtime.
    pub fn set_rate_limits(&self, enabled: bool, per_minute: BTreeMap<String, u32>) {
        lock(&self.throttle).reconfigure(enabled, per_minute);
    }

    /// Faults that fired so far.
    pub fn fired_faults(&self) -> Vec<FiredFault> {
        lock(&self.fired).clone()
    }

    /// The call log.
    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.calls).iter().cloned().collect()
    }

    /// Add an instance (with its primary ENI) at runtime.
    pub fn add_instance(
        &self,
        cfg: &crate::config::InstanceConfig,
    ) -> Result<crate::world::Instance, EmulatorError> {
        if !self.catalogue.contains_key(&cfg.instance_type) {
            return Err(EmulatorError::InvalidConfig(format!(
                "instance {} has unknown instance type {}",
                cfg.id, cfg.instance_type
            )));
        }
        self.mutate(|world| world.add_instance(cfg)).map_err(|e| {
            EmulatorError::InvalidConfig(format!("cannot add instance {}: {}", cfg.id, e.message))
        })
    }

    /// Mutate the world under the lock and persist the new state (serialised under the lock, written
    /// after it, generations keep writes ordered). A failed write does not undo the change: memory
    /// stays authoritative, the failure is logged and recorded as a fired fault.
    pub(crate) fn mutate<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        match self.try_mutate(f) {
            Ok(out) => out,
            Err((out, e)) => {
                tracing::warn!(error = %e, "emulator state could not be persisted");
                self.record_fault("", "", "persist_failed", e.to_string());
                out
            }
        }
    }

    fn try_mutate<T>(&self, f: impl FnOnce(&mut World) -> T) -> Result<T, (T, EmulatorError)> {
        let (out, generation, json) = {
            let mut world = lock(&self.world);
            let out = f(&mut world);
            let (generation, json) = self.serialise(&world);
            (out, generation, json)
        };
        match json.map(|j| self.persister.write(generation, &j)) {
            Some(Err(e)) => Err((out, e)),
            _ => Ok(out),
        }
    }

    fn serialise(&self, world: &World) -> (u64, Option<Vec<u8>>) {
        let mut g = lock(&self.generation);
        *g += 1;
        let json = if self.persister.enabled() {
            serde_json::to_vec(world).ok()
        } else {
            None
        };
        (*g, json)
    }

    fn persist_now(&self) -> Result<(), EmulatorError> {
        self.try_mutate(|_| ()).map_err(|(_, e)| e)
    }

    pub(crate) fn record_fault(&self, action: &str, request_id: &str, kind: &str, detail: String) {
        lock(&self.fired).push(FiredFault {
            at_ms: now_ms(),
            action: action.to_string(),
            request_id: request_id.to_string(),
            kind: kind.to_string(),
            detail,
        });
    }

    /// Serve one OpenAPI call.
    pub async fn call(self: &Arc<Self>, req: RawRequest) -> ApiAnswer {
        let started = Instant::now();
        let request_id = new_request_id();
        let query = terway_cloud::sign::parse_query(&req.query);
        let is_form = req.headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("content-type")
                && v.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
        });
        let mut all = query.clone();
        if is_form {
            all.extend(terway_cloud::sign::parse_query(&String::from_utf8_lossy(
                &req.body,
            )));
        }
        let params = Params::from_pairs(&all);
        let header = |n: &str| {
            req.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let action = params
            .get("Action")
            .map(str::to_string)
            .or_else(|| header("x-acs-action"))
            .unwrap_or_default();
        let version = params
            .get("Version")
            .map(str::to_string)
            .or_else(|| header("x-acs-version"))
            .unwrap_or_default();
        let incoming = Incoming {
            method: &req.method,
            path: &req.path,
            query: &query,
            params: &all,
            headers: &req.headers,
            body: &req.body,
        };
        let mut ak = String::new();
        let result = self
            .pipeline(&action, &version, &params, &incoming, &mut ak, &request_id)
            .await;
        let (status, code, mut body) = match result {
            Ok(map) => (200, "OK".to_string(), Value::Object(map)),
            Err((e, host)) => {
                let body = e.body(host, &request_id);
                (e.status, e.code, body)
            }
        };
        body["RequestId"] = Value::String(request_id.clone());
        let record = CallRecord {
            at_ms: now_ms(),
            request_id: request_id.clone(),
            action,
            access_key_id: ak,
            params: params.business(),
            code,
            status,
            latency_ms: started.elapsed().as_millis() as u64,
        };
        let mut calls = lock(&self.calls);
        if calls.len() >= CALL_LOG_CAPACITY {
            calls.pop_front();
        }
        calls.push_back(record);
        ApiAnswer {
            status,
            body,
            request_id,
        }
    }

    async fn pipeline(
        self: &Arc<Self>,
        action: &str,
        version: &str,
        params: &Params,
        incoming: &Incoming<'_>,
        ak: &mut String,
        request_id: &str,
    ) -> Result<serde_json::Map<String, Value>, (ApiError, &'static str)> {
        let generic = GENERIC_HOST_ID;
        if action.is_empty() {
            return Err((ApiError::missing("Action"), generic));
        }
        if version.is_empty() {
            return Err((ApiError::missing("Version"), generic));
        }
        if !actions::known_version(version) {
            return Err((
                ApiError::new(
                    400,
                    "InvalidVersion",
                    format!("Specified parameter Version {version} is not valid."),
                ),
                generic,
            ));
        }
        let product = actions::product_of(action, version).ok_or_else(|| {
            (
                ApiError::new(
                    404,
                    "InvalidAction.NotFound",
                    format!(
                        "Specified api {action} is not found, please check your url and method."
                    ),
                ),
                generic,
            )
        })?;
        let host = product.host_id();
        *ak = lock(&self.auth)
            .authenticate(incoming)
            .map_err(|e| (e, host))?;

        let faults = self.faults();
        let mut delay = random_delay(
            self.config.delays.api_latency_min_ms,
            self.config.delays.api_latency_max_ms,
        );
        if let Some(extra) = faults.latency_for(action) {
            self.record_fault(action, request_id, "latency", format!("{extra} ms"));
            delay += Duration::from_millis(extra);
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        lock(&self.throttle).take(action).map_err(|e| (e, host))?;
        if let Some(e) = faults.roll_error(action) {
            self.record_fault(action, request_id, "error", e.code.clone());
            return Err((e, host));
        }
        if actions::is_describe(action) {
            let outcome = self
                .describe(action, params, faults.describe_lag_ms)
                .map_err(|e| (e, host))?;
            return Ok(outcome.body);
        }
        let outcome = self
            .execute_mutating(action, params)
            .map_err(|e| (e, host))?;
        self.run_effects(outcome.effects).await;
        if let Some(e) = faults.roll_after_commit(action) {
            self.record_fault(action, request_id, "error_after_commit", e.code.clone());
            return Err((e, host));
        }
        Ok(outcome.body)
    }

    /// Run `action` as the account owner would from the console: no signature, throttle or injected
    /// fault, but the same validation, state change and data-plane effects as over the OpenAPI
    /// (`RegionId` defaults to the emulator's). The lab's `terway-lab api` uses it.
    pub async fn call_as_owner(
        self: &Arc<Self>,
        action: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<serde_json::Value, ApiError> {
        let known = [actions::ECS_VERSION, actions::VPC_VERSION]
            .iter()
            .any(|v| actions::product_of(action, v).is_some());
        if !known {
            return Err(ApiError::new(
                404,
                "InvalidAction.NotFound",
                format!("Specified api {action} is not found, please check your url and method."),
            ));
        }
        let mut pairs: Vec<(String, String)> =
            params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if !params.contains_key("RegionId") {
            pairs.push(("RegionId".into(), self.config.region_id.clone()));
        }
        let params = Params::from_pairs(&pairs);
        let outcome = if actions::is_describe(action) {
            self.describe(action, &params, 0)?
        } else {
            self.execute_mutating(action, &params)?
        };
        self.run_effects(outcome.effects).await;
        Ok(serde_json::Value::Object(outcome.body))
    }

    fn describe(&self, action: &str, params: &Params, lag_ms: u64) -> Result<Outcome, ApiError> {
        if lag_ms == 0 {
            let world = lock(&self.world);
            return actions::describe(action, params, &world, &self.env());
        }
        let view = self.lagged_view(&self.snapshot, lag_ms);
        actions::describe(action, params, &view, &self.env())
    }

    /// A copy of the world at most `lag_ms` old: reused while young enough, else taken afresh.
    fn lagged_view(&self, slot: &Mutex<Option<(Instant, Arc<World>)>>, lag_ms: u64) -> Arc<World> {
        let mut snap = lock(slot);
        match snap.as_ref() {
            Some((taken, w)) if taken.elapsed() < Duration::from_millis(lag_ms) => Arc::clone(w),
            _ => {
                let fresh = Arc::new(lock(&self.world).clone());
                *snap = Some((Instant::now(), Arc::clone(&fresh)));
                fresh
            }
        }
    }

    /// The world as the metadata service sees it (lagging by `metadata_lag_ms` when configured).
    pub(crate) fn metadata_view(&self) -> Arc<World> {
        let lag = lock(&self.faults).metadata_lag_ms;
        if lag == 0 {
            return Arc::new(self.world());
        }
        self.lagged_view(&self.md_snapshot, lag)
    }

    fn execute_mutating(&self, action: &str, params: &Params) -> Result<Outcome, ApiError> {
        let token_key = if actions::uses_client_token(action) {
            params.get("ClientToken").map(|t| format!("{action}/{t}"))
        } else {
            None
        };
        let fingerprint = params.business();
        let env = self.env();
        self.mutate(|world| -> Result<Outcome, ApiError> {
            if let Some(key) = &token_key {
                if let Some(rec) = world.tokens.get(key) {
                    if rec.fingerprint == fingerprint {
                        return Ok(Outcome::body(rec.response.clone()));
                    }
                    return Err(ApiError::new(
                        400,
                        "IdempotentFailed",
                        "Request uses a client token in a previous request but is not identical to that request.",
                    ));
                }
            }
            let busy_eni = self.check_busy(action, params)?;
            let outcome = actions::execute(action, params, world, &env)?;
            self.mark_busy(busy_eni);
            if let Some(key) = token_key {
                let record = TokenRecord {
                    fingerprint,
                    response: Value::Object(outcome.body.clone()),
                    at_ms: now_ms(),
                };
                world.remember_token(key, record);
            }
            Ok(outcome)
        })
    }

    /// The ENI a call operates on, if the busy window applies to it; `Operation.Conflict` if that
    /// ENI is still busy with an earlier call.
    fn check_busy(&self, action: &str, params: &Params) -> Result<Option<String>, ApiError> {
        if self.config.delays.eni_busy_ms == 0 || !actions::targets_one_eni(action) {
            return Ok(None);
        }
        let Some(eni) = params.get("NetworkInterfaceId") else {
            return Ok(None);
        };
        let mut busy = lock(&self.busy);
        let now = Instant::now();
        busy.retain(|_, until| *until > now);
        if busy.contains_key(eni) {
            return Err(ApiError::conflict(eni, "processing a previous operation"));
        }
        Ok(Some(eni.to_string()))
    }

    fn mark_busy(&self, eni: Option<String>) {
        if let Some(eni) = eni {
            let until = Instant::now() + Duration::from_millis(self.config.delays.eni_busy_ms);
            lock(&self.busy).insert(eni, until);
        }
    }
}

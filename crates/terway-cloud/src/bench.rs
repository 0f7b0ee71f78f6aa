//! A bounded benchmark of a running (emulated) cloud endpoint: sustained requests/s with N concurrent
//! callers, end-to-end latency percentiles, and the client's own CPU cost per call (signing, encoding,
//! parsing — measured without I/O). `terway-lab bench cloud` starts an emulator and calls [`run`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::api::{Cloud, CloudResult};
use crate::backoff::{self, Backoff};
use crate::client::AlibabaCloud;
use crate::config::CloudConfig;
use crate::types::CreateEniRequest;

/// What to run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BenchOptions {
    /// Length of the read phase.
    pub duration_ms: u64,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Instance type the read phase describes.
    pub instance_type: String,
    /// When set, a second phase of the same length creates and deletes ENIs in this vSwitch.
    pub vswitch_id: Option<String>,
    /// Security group for the write phase.
    pub security_group_id: String,
    /// Iterations of the no-I/O client overhead measurement.
    pub overhead_iterations: u32,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            duration_ms: 2_000,
            concurrency: 16,
            instance_type: "ecs.g7.4xlarge".into(),
            vswitch_id: None,
            security_group_id: "sg-bench".into(),
            overhead_iterations: 2_000,
        }
    }
}

/// Result of one phase.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PhaseReport {
    /// Action(s) exercised.
    pub workload: String,
    /// Logical calls completed.
    pub calls: u64,
    /// Calls that failed (throttling included: retries are disabled in the benchmark).
    pub errors: u64,
    /// Wall time of the phase, seconds.
    pub elapsed_s: f64,
    /// HTTP requests per second.
    pub requests_per_sec: f64,
    /// Latency percentiles, milliseconds.
    pub latency_ms_p50: f64,
    /// 99th percentile.
    pub latency_ms_p99: f64,
    /// Maximum.
    pub latency_ms_max: f64,
}

/// What [`run`] returns.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BenchReport {
    /// Concurrent callers used.
    pub concurrency: usize,
    /// Read phase (DescribeInstanceTypes).
    pub read: PhaseReport,
    /// Write phase (CreateNetworkInterface + DeleteNetworkInterface), when a vSwitch was given.
    pub write: Option<PhaseReport>,
    /// Client CPU per call without I/O (sign + encode + parse a typical response), microseconds.
    pub client_overhead_us_per_call: f64,
    /// Of which ACS3 signing alone, microseconds.
    pub signing_us_per_call: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Run the benchmark against the endpoint of `cfg`. Client-side rate limits are lifted and retries
/// disabled so the numbers are the server's; start the emulator with throttling off to measure its
/// raw throughput (throttled calls are counted as errors otherwise).
pub async fn run(mut cfg: CloudConfig, opts: BenchOptions) -> CloudResult<BenchReport> {
    for action in [
        "DescribeInstanceTypes",
        "CreateNetworkInterface",
        "DeleteNetworkInterface",
    ] {
        cfg.rate_limit.insert(action.into(), 10_000_000);
    }
    let once = Backoff::new(0, 0, 1.0, 0.0, 1);
    for name in [backoff::DEFAULT, backoff::ENI_CREATE, backoff::ENI_OPS] {
        cfg.backoff_override.insert(name.into(), once.into());
    }
    let cloud = Arc::new(AlibabaCloud::new(cfg)?);
    let duration = Duration::from_millis(opts.duration_ms.clamp(100, 30_000));
    let concurrency = opts.concurrency.clamp(1, 256);

    let types = vec![opts.instance_type.clone()];
    let read = phase(
        &cloud,
        concurrency,
        duration,
        "DescribeInstanceTypes",
        1,
        move |c| {
            let types = types.clone();
            async move { c.describe_instance_types(&types).await.map(|_| ()) }
        },
    )
    .await;

    let write = match &opts.vswitch_id {
        None => None,
        Some(vsw) => {
            let req = CreateEniRequest {
                vswitch_id: vsw.clone(),
                security_group_ids: vec![opts.security_group_id.clone()],
                description: "terway bench".into(),
                ..Default::default()
            };
            Some(
                phase(
                    &cloud,
                    concurrency,
                    duration,
                    "CreateNetworkInterface+DeleteNetworkInterface",
                    2,
                    move |c| {
                        let req = req.clone();
                        async move {
                            let eni = c.create_network_interface(&req).await?;
                            c.delete_network_interface(&eni.id).await
                        }
                    },
                )
                .await,
            )
        }
    };
    let (overhead, signing) = client_overhead(opts.overhead_iterations.max(10));
    Ok(BenchReport {
        concurrency,
        read,
        write,
        client_overhead_us_per_call: overhead,
        signing_us_per_call: signing,
    })
}

async fn phase<F, Fut>(
    cloud: &Arc<AlibabaCloud>,
    concurrency: usize,
    duration: Duration,
    workload: &str,
    requests_per_call: u64,
    op: F,
) -> PhaseReport
where
    F: Fn(Arc<AlibabaCloud>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = CloudResult<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (cloud, op) = (cloud.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(cloud.clone()).await.is_err() {
                    errors += 1;
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let calls = all.len() as u64;
    PhaseReport {
        workload: workload.into(),
        calls,
        errors,
        elapsed_s: elapsed,
        requests_per_sec: if elapsed > 0.0 {
            (calls * requests_per_call) as f64 / elapsed
        } else {
            0.0
        },
        latency_ms_p50: percentile(&all, 0.5),
        latency_ms_p99: percentile(&all, 0.99),
        latency_ms_max: all.last().copied().unwrap_or(0.0),
    }
}

/// CPU cost of the client's per-call work without the network: build parameters, sign (ACS3),
/// encode the URL, and parse a DescribeNetworkInterfaces page of one ENI.
fn client_overhead(iterations: u32) -> (f64, f64) {
    let params: crate::sign::Pairs = vec![
        ("RegionId".into(), "cn-hangzhou".into()),
        ("NetworkInterfaceId".into(), "eni-bench000000000000".into()),
        ("SecondaryPrivateIpAddressCount".into(), "5".into()),
        (
            "ClientToken".into(),
            "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
        ),
    ];
    let body = serde_json::json!({"RequestId": "R", "NetworkInterfaceSets": {"NetworkInterfaceSet": [{
        "NetworkInterfaceId": "eni-1", "Status": "InUse", "Type": "Secondary", "VpcId": "vpc-1",
        "VSwitchId": "vsw-1", "ZoneId": "z", "PrivateIpAddress": "10.0.0.2", "MacAddress": "00:16:3e:00:00:01",
        "PrivateIpSets": {"PrivateIpSet": [{"PrivateIpAddress": "10.0.0.2", "Primary": true}]},
        "Tags": {"Tag": [{"TagKey": "creator", "TagValue": "terway"}]}}]}})
    .to_string();
    let sign_once = || {
        let date = crate::sign::format_timestamp(SystemTime::now());
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        crate::sign::sign_acs3(
            &crate::sign::Acs3Request {
                method: "POST",
                host: "ecs-vpc.cn-hangzhou.aliyuncs.com",
                path: "/",
                query: &params,
                body: b"",
                content_type: None,
                action: "AssignPrivateIpAddresses",
                version: "2014-05-26",
                date: &date,
                nonce: &nonce,
                security_token: None,
            },
            "LTAIBENCH",
            "secret",
        )
    };
    let t = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(sign_once());
    }
    let signing = t.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
    let t = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(sign_once());
        std::hint::black_box(crate::sign::encode_query(&params));
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
            std::hint::black_box(crate::parse::eni_page(&v).ok());
        }
    }
    let total = t.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
    (total, signing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_overhead_are_sane() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        let (total, signing) = client_overhead(20);
        assert!(total > 0.0 && signing > 0.0, "{total} {signing}");
    }
}

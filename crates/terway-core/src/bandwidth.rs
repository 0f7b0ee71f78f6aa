//! Bandwidth limits: parsing Terway's `k8s.aliyun.com/*-bandwidth` annotations (bytes/s with binary
//! K/M/G/T suffixes) and Kubernetes `kubernetes.io/*-bandwidth` quantities (bits/s), and the tbf
//! parameters of reference §8.1 that the datapath programs.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::types::annotations;

/// Why a bandwidth value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BandwidthError {
    /// The text is not a number with an accepted suffix.
    #[error("bandwidth {input:?} is not valid: {reason}")]
    Invalid {
        /// The text given.
        input: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// The value does not fit 64 bits.
    #[error("bandwidth {0:?} is too large")]
    Overflow(String),
    /// A zero rate cannot be shaped.
    #[error("bandwidth rate must be greater than 0 bytes/s")]
    ZeroRate,
}

fn invalid(input: &str, reason: &str) -> BandwidthError {
    BandwidthError::Invalid {
        input: input.to_string(),
        reason: reason.to_string(),
    }
}

/// Split `body` into its decimal number and the suffix that follows it.
fn split_number<'a>(
    input: &str,
    body: &'a str,
) -> Result<(&'a str, &'a str, &'a str), BandwidthError> {
    let num_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(num_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(invalid(input, "expected a number such as 10M, 1Gi or 500k"));
    }
    Ok((int_part, frac_part, suffix))
}

/// Exactly `int.frac × 2^bin_exp × 10^dec_exp`, rounded up or down, checked against u64.
fn scale(
    input: &str,
    int_part: &str,
    frac_part: &str,
    bin_exp: u32,
    dec_exp: i32,
    round_up: bool,
) -> Result<u64, BandwidthError> {
    let overflow = || BandwidthError::Overflow(input.to_string());
    let mut numerator: u128 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        numerator = numerator
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| overflow())?;
    let net_dec = dec_exp.checked_sub(frac_len).ok_or_else(overflow)?;
    let pow10 = |e: i32| 10u128.checked_pow(e.unsigned_abs()).ok_or_else(overflow);
    let mut denominator: u128 = 1;
    if numerator != 0 {
        if net_dec >= 0 {
            numerator = numerator
                .checked_mul(pow10(net_dec)?)
                .ok_or_else(overflow)?;
        } else {
            denominator = pow10(net_dec)?;
        }
        numerator = numerator
            .checked_mul(1u128 << bin_exp)
            .ok_or_else(overflow)?;
    }
    let value = if round_up {
        numerator.div_ceil(denominator)
    } else {
        numerator / denominator
    };
    u64::try_from(value).map_err(|_| overflow())
}

/// Parse Terway's deprecated annotation value: a positive number of **bytes/s** with an optional
/// binary suffix (case-insensitive) K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB or B; `"10M"` =
/// 10 485 760 bytes/s. Fractions are allowed and truncated to whole bytes, as Terway does.
pub fn parse_aliyun_bandwidth(input: &str) -> Result<u64, BandwidthError> {
    let upper = input.trim().to_ascii_uppercase();
    if upper.is_empty() {
        return Err(invalid(
            input,
            "it is empty; write e.g. \"10M\" (bytes/s, K/M/G/T = 1024-based)",
        ));
    }
    let (int_part, frac_part, suffix) = split_number(input, &upper)?;
    let bin_exp = match suffix {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(invalid(
                input,
                "the unit must be one of K, M, G, T (bytes/s, 1024-based)",
            ))
        }
    };
    match scale(input, int_part, frac_part, bin_exp, 0, false)? {
        0 => Err(invalid(input, "the rate must be at least 1 byte/s")),
        n => Ok(n),
    }
}

/// Parse a Kubernetes `resource.Quantity` (as used by `kubernetes.io/*-bandwidth`, bits/s) and round
/// up to an integer like `Quantity.Value()`: decimal suffixes n u m k M G T P E, binary Ki Mi Gi Ti
/// Pi Ei, or an exponent (`1e6`). Negative values are rejected.
pub fn parse_k8s_quantity(input: &str) -> Result<u64, BandwidthError> {
    let s = input.trim();
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return Err(invalid(input, "negative quantities are not allowed"));
    }
    let (int_part, frac_part, suffix) = split_number(input, body)?;
    let (bin_exp, dec_exp): (u32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        other if other.starts_with(['e', 'E']) && other.len() > 1 => {
            let e: i32 = other[1..]
                .parse()
                .map_err(|_| invalid(input, "the exponent after 'e' must be an integer"))?;
            if !(-30..=30).contains(&e) {
                return Err(BandwidthError::Overflow(input.to_string()));
            }
            (0, e)
        }
        _ => {
            return Err(invalid(
                input,
                "unknown suffix; use k, M, G, T (1000-based), Ki, Mi, Gi, Ti (1024-based) or m",
            ))
        }
    };
    scale(input, int_part, frac_part, bin_exp, dec_exp, true)
}

/// Convert a rate in bits/s (CNI runtimeConfig, Kubernetes annotations) to bytes/s, rounding up so a
/// tiny non-zero limit never becomes "no limit".
pub fn bits_to_bytes(bits_per_sec: u64) -> u64 {
    bits_per_sec.div_ceil(8)
}

/// A pod's shaping limits in bytes/s (`None` = unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodBandwidth {
    /// Traffic towards the pod.
    pub ingress: Option<u64>,
    /// Traffic leaving the pod.
    pub egress: Option<u64>,
}

impl PodBandwidth {
    /// Read the limits from pod annotations; `kubernetes.io/*` (bits/s) wins over the deprecated
    /// `k8s.aliyun.com/*` (bytes/s). The error names the annotation.
    pub fn from_annotations(
        ann: &BTreeMap<String, String>,
    ) -> Result<Self, (String, BandwidthError)> {
        let pick = |k8s: &str, aliyun: &str| -> Result<Option<u64>, (String, BandwidthError)> {
            if let Some(v) = ann.get(k8s) {
                return parse_k8s_quantity(v)
                    .map(|bits| Some(bits_to_bytes(bits)))
                    .map_err(|e| (k8s.to_string(), e));
            }
            if let Some(v) = ann.get(aliyun) {
                return parse_aliyun_bandwidth(v)
                    .map(Some)
                    .map_err(|e| (aliyun.to_string(), e));
            }
            Ok(None)
        };
        Ok(Self {
            ingress: pick(
                annotations::K8S_INGRESS_BANDWIDTH,
                annotations::INGRESS_BANDWIDTH,
            )?,
            egress: pick(
                annotations::K8S_EGRESS_BANDWIDTH,
                annotations::EGRESS_BANDWIDTH,
            )?,
        })
    }

    /// Apply CNI `runtimeConfig.bandwidth` rates (bits/s), which override annotations when non-zero.
    pub fn with_runtime_config(
        mut self,
        ingress_bits: Option<u64>,
        egress_bits: Option<u64>,
    ) -> Self {
        if let Some(b) = ingress_bits.filter(|b| *b > 0) {
            self.ingress = Some(bits_to_bytes(b));
        }
        if let Some(b) = egress_bits.filter(|b| *b > 0) {
            self.egress = Some(bits_to_bytes(b));
        }
        self
    }
}

/// Queue latency budget used for the tbf `limit`.
pub const TBF_LATENCY: Duration = Duration::from_millis(25);

/// Parameters of a tbf root qdisc (reference §8.1), all in bytes except `buffer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TbfParams {
    /// Rate in bytes/s.
    pub rate: u64,
    /// Bucket size: `ceil(max(rate/1000, mtu+1500))`.
    pub burst: u64,
    /// Time to drain `burst` at `rate` (the datapath converts it to kernel ticks).
    pub buffer: Duration,
    /// Queue size: `rate × 25 ms + burst`.
    pub limit: u64,
    /// Peak bucket size: the MTU.
    pub minburst: u32,
}

/// Compute tbf parameters for `rate` bytes/s on a link with `mtu`.
pub fn tbf_params(rate: u64, mtu: u32) -> Result<TbfParams, BandwidthError> {
    if rate == 0 {
        return Err(BandwidthError::ZeroRate);
    }
    let burst = rate.div_ceil(1000).max(u64::from(mtu) + 1500);
    let nanos = (u128::from(burst) * 1_000_000_000).div_ceil(u128::from(rate));
    let buffer = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    let queued = u128::from(rate) * TBF_LATENCY.as_millis() / 1000;
    let limit = u64::try_from(queued + u128::from(burst))
        .map_err(|_| BandwidthError::Overflow(rate.to_string()))?;
    Ok(TbfParams {
        rate,
        burst,
        buffer,
        limit,
        minburst: mtu,
    })
}

#[cfg(test)]
#[path = "bandwidth_tests.rs"]
mod tests;

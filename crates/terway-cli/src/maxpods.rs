//! `terway-cli maxpods`: Alibaba Cloud's pod-limit formulas (terway-core) for an instance type,
//! from quotas given as flags or looked up from the daemon's node.

use std::fmt::Write;

use terway_core::{check_node_admission, limits, InstanceLimits, Mode};
use terway_rpc::v1 as pb;

/// Flags of `maxpods`.
#[derive(Debug, clap::Args)]
pub struct MaxpodsArgs {
    /// Instance type (informational when quotas are given; checked against the daemon's otherwise).
    #[arg(long)]
    pub instance_type: Option<String>,
    /// EniQuantity (ENIs, primary included).
    #[arg(long)]
    pub eni_quantity: Option<u32>,
    /// EniPrivateIpAddressQuantity (IPv4 per ENI).
    #[arg(long)]
    pub ips_per_eni: Option<u32>,
    /// EniTotalQuantity (ENIs including trunk members); defaults to EniQuantity.
    #[arg(long)]
    pub eni_total_quantity: Option<u32>,
}

impl MaxpodsArgs {
    /// Whether the quotas were given on the command line.
    pub fn has_quotas(&self) -> bool {
        self.eni_quantity.is_some() && self.ips_per_eni.is_some()
    }
}

/// Pod limits of one instance type.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MaxpodsReport {
    /// Instance type, if known.
    pub instance_type: Option<String>,
    /// Where the quotas came from.
    pub source: String,
    /// EniQuantity.
    pub eni_quantity: u32,
    /// IPv4 per ENI.
    pub ips_per_eni: u32,
    /// EniTotalQuantity.
    pub eni_total_quantity: u32,
    /// Shared ENI mode pod limit.
    pub shared: u32,
    /// Exclusive ENI mode pod limit.
    pub exclusive: u32,
    /// Trunk (member ENI) pods.
    pub trunk: u32,
    /// Admission verdicts per mode (ok or why not).
    pub admission: Vec<(String, String)>,
}

/// Compute the report from flags or the daemon's status.
pub fn compute(
    args: &MaxpodsArgs,
    daemon: Option<&pb::StatusReply>,
) -> anyhow::Result<MaxpodsReport> {
    let (l, instance_type, source) = match (args.eni_quantity, args.ips_per_eni, daemon) {
        (Some(q), Some(ips), _) => (
            InstanceLimits {
                eni_quantity: q,
                eni_private_ip_address_quantity: ips,
                eni_total_quantity: args.eni_total_quantity.unwrap_or(q),
                eni_ipv6_address_quantity: 0,
            },
            args.instance_type.clone(),
            "flags".to_string(),
        ),
        (_, _, Some(s)) => {
            let lim = s.limits.as_ref().ok_or_else(|| {
                anyhow::anyhow!("the daemon reports no instance quotas (vpc-route mode?); pass --eni-quantity and --ips-per-eni")
            })?;
            if let Some(t) = &args.instance_type {
                if *t != s.instance_type {
                    anyhow::bail!(
                        "the daemon runs on {} not {t}; pass --eni-quantity and --ips-per-eni for other types",
                        s.instance_type
                    );
                }
            }
            (
                InstanceLimits {
                    eni_quantity: lim.eni_quantity,
                    eni_private_ip_address_quantity: lim.eni_private_ip_quantity,
                    eni_total_quantity: lim.eni_total_quantity,
                    eni_ipv6_address_quantity: lim.eni_ipv6_quantity,
                },
                Some(s.instance_type.clone()),
                format!("terwayd on {}", s.instance_id),
            )
        }
        _ => anyhow::bail!(
            "give --eni-quantity and --ips-per-eni, or run next to a terwayd (--socket)"
        ),
    };
    let admission = [Mode::Shared, Mode::Exclusive]
        .into_iter()
        .map(|m| {
            let verdict = match check_node_admission(m, &l) {
                Ok(n) => format!("ok ({n} pods)"),
                Err(e) => e.to_string(),
            };
            (m.to_string(), verdict)
        })
        .collect();
    Ok(MaxpodsReport {
        instance_type,
        source,
        eni_quantity: l.eni_quantity,
        ips_per_eni: l.eni_private_ip_address_quantity,
        eni_total_quantity: l.eni_total_quantity,
        shared: limits::shared_pod_limit(&l),
        exclusive: limits::exclusive_pod_limit(&l),
        trunk: limits::trunk_pod_limit(&l),
        admission,
    })
}

/// Human-readable report.
pub fn render(r: &MaxpodsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} (quotas from {}): {} ENIs × {} IPv4, {} ENIs with trunk members",
        r.instance_type.as_deref().unwrap_or("instance"),
        r.source,
        r.eni_quantity,
        r.ips_per_eni,
        r.eni_total_quantity
    );
    let _ = writeln!(
        out,
        "  shared ENI:    {} pods  ((EniQuantity − 1) × IPs per ENI)",
        r.shared
    );
    let _ = writeln!(
        out,
        "  exclusive ENI: {} pods  (EniQuantity − 1)",
        r.exclusive
    );
    let _ = writeln!(
        out,
        "  trunk members: {} pods  (EniTotalQuantity − EniQuantity)",
        r.trunk
    );
    for (mode, verdict) in &r.admission {
        let _ = writeln!(out, "  admission in {mode} mode: {verdict}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_from_flags() {
        let args = MaxpodsArgs {
            instance_type: Some("ecs.g7.4xlarge".into()),
            eni_quantity: Some(8),
            ips_per_eni: Some(30),
            eni_total_quantity: Some(24),
        };
        let r = compute(&args, None).unwrap();
        assert_eq!((r.shared, r.exclusive, r.trunk), (210, 7, 16));
        assert!(
            r.admission.iter().all(|(_, v)| v.starts_with("ok")),
            "{:?}",
            r.admission
        );
        assert!(render(&r).contains("210 pods"));
    }

    #[test]
    fn small_types_fail_admission_and_daemon_lookup_is_checked() {
        let args = MaxpodsArgs {
            instance_type: None,
            eni_quantity: Some(2),
            ips_per_eni: Some(6),
            eni_total_quantity: None,
        };
        let r = compute(&args, None).unwrap();
        assert_eq!(r.shared, 6);
        assert!(r.admission.iter().any(|(_, v)| !v.starts_with("ok")));
        let status = pb::StatusReply {
            instance_id: "i-1".into(),
            instance_type: "ecs.g7.large".into(),
            limits: Some(pb::InstanceLimits {
                eni_quantity: 3,
                eni_private_ip_quantity: 6,
                eni_ipv6_quantity: 6,
                eni_total_quantity: 3,
            }),
            ..Default::default()
        };
        let none = MaxpodsArgs {
            instance_type: None,
            eni_quantity: None,
            ips_per_eni: None,
            eni_total_quantity: None,
        };
        assert_eq!(compute(&none, Some(&status)).unwrap().shared, 12);
        let other = MaxpodsArgs {
            instance_type: Some("ecs.x".into()),
            ..none
        };
        assert!(compute(&other, Some(&status))
            .unwrap_err()
            .to_string()
            .contains("ecs.g7.large"));
        let bare = MaxpodsArgs {
            instance_type: None,
            eni_quantity: None,
            ips_per_eni: None,
            eni_total_quantity: None,
        };
        assert!(compute(&bare, None).is_err());
    }
}

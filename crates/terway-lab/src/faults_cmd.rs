//! `terway-lab faults set|clear|show`: fault injection in a running lab's emulated cloud (errors before or
//! after a call takes effect, Describe/metadata lag, failed attaches, extra latency), to watch the real
//! daemon cope with a misbehaving cloud.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::control::{self, Request};
use crate::state;

/// Arguments of `faults`.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultsArgs {
    /// Lab name (optional when exactly one lab exists).
    #[arg(long, global = true)]
    pub lab: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub cmd: FaultsCmd,
}

/// `faults` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FaultsCmd {
    /// Replace the fault configuration (rates apply to every action).
    Set {
        /// Probability that a call fails before it has any effect.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Probability that a mutating call takes effect but still answers an error.
        #[arg(long, default_value_t = 0.0)]
        error_after_commit_rate: f64,
        /// Extra latency per call, ms.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Describe* answers from a snapshot up to this old, ms.
        #[arg(long, default_value_t = 0)]
        describe_lag_ms: u64,
        /// Metadata answers from a snapshot up to this old, ms.
        #[arg(long, default_value_t = 0)]
        metadata_lag_ms: u64,
        /// Probability that an attach fails in the cloud.
        #[arg(long, default_value_t = 0.0)]
        attach_failure_rate: f64,
    },
    /// Remove every fault.
    Clear,
    /// Show the configuration and how many faults fired.
    Show,
}

/// The `FaultConfig` JSON for the `set` flags.
pub fn fault_json(
    error_rate: f64,
    error_after_commit_rate: f64,
    latency_ms: u64,
    describe_lag_ms: u64,
    metadata_lag_ms: u64,
    attach_failure_rate: f64,
) -> Value {
    let per_action = |v: Value, on: bool| -> Value {
        let mut m = Map::new();
        if on {
            m.insert("*".into(), v);
        }
        Value::Object(m)
    };
    json!({
        "error_rate": per_action(json!(error_rate), error_rate > 0.0),
        "error_after_commit_rate": per_action(json!(error_after_commit_rate), error_after_commit_rate > 0.0),
        "extra_latency_ms": per_action(json!(latency_ms), latency_ms > 0),
        "describe_lag_ms": describe_lag_ms,
        "metadata_lag_ms": metadata_lag_ms,
        "attach_failure_rate": attach_failure_rate,
    })
}

/// `terway-lab faults …`.
pub fn run(args: FaultsArgs) -> anyhow::Result<()> {
    let lab = state::resolve_lab(args.lab.as_deref())?;
    let dir = state::load(&lab)?.plan.dir;
    let req = match args.cmd {
        FaultsCmd::Set {
            error_rate,
            error_after_commit_rate,
            latency_ms,
            describe_lag_ms,
            metadata_lag_ms,
            attach_failure_rate,
        } => {
            for (name, p) in [
                ("--error-rate", error_rate),
                ("--error-after-commit-rate", error_after_commit_rate),
                ("--attach-failure-rate", attach_failure_rate),
            ] {
                if !(0.0..=1.0).contains(&p) {
                    anyhow::bail!("{name} {p} is not a probability in 0..=1");
                }
            }
            Request::SetFaults {
                faults: fault_json(
                    error_rate,
                    error_after_commit_rate,
                    latency_ms,
                    describe_lag_ms,
                    metadata_lag_ms,
                    attach_failure_rate,
                ),
            }
        }
        FaultsCmd::Clear => Request::SetFaults { faults: json!({}) },
        FaultsCmd::Show => Request::Faults,
    };
    let out = control::call(&dir, &req, Duration::from_secs(10))?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_flags_become_a_fault_config() {
        let v = fault_json(0.2, 0.0, 0, 300, 0, 0.1);
        let cfg: terway_emulator::FaultConfig = serde_json::from_value(v).unwrap();
        assert_eq!(cfg.error_rate.get("*"), Some(&0.2));
        assert!(cfg.error_after_commit_rate.is_empty());
        assert_eq!(cfg.describe_lag_ms, 300);
        assert_eq!(cfg.attach_failure_rate, 0.1);
    }
}

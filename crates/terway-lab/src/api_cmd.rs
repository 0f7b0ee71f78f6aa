//! `terway-lab api ACTION [KEY=VALUE]…`: run an OpenAPI action against a lab's emulated cloud as the
//! account owner would from the console (no signature; the same validation and data-plane effects),
//! through the emulator's admin socket. For what a user does outside the cluster: security groups and
//! their rules, vSwitches to look at. `RegionId` defaults to the lab's.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::state;

/// Arguments of `api`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Lab name (optional when exactly one lab exists).
    #[arg(long)]
    pub lab: Option<String>,
    /// The action, e.g. `CreateSecurityGroup`.
    pub action: String,
    /// Parameters as `Key=Value`, e.g. `SecurityGroupId=sg-… IpProtocol=TCP PortRange=80/80`.
    pub params: Vec<String>,
}

/// `Key=Value` arguments as a map; the first `=` splits.
pub fn parse_params(raw: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    raw.iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), Value::String(v.to_string()))),
            _ => Err(anyhow::anyhow!(
                "parameter {p:?} is not Key=Value (e.g. SecurityGroupName=web)"
            )),
        })
        .collect()
}

/// POST `body` to `path` of the HTTP server on unix socket `sock`; (status code, body).
fn post(sock: &std::path::Path, path: &str, body: &Value) -> anyhow::Result<(u16, String)> {
    let mut s = UnixStream::connect(sock).map_err(|e| {
        anyhow::anyhow!(
            "emulator admin socket {} not reachable ({e}); is the lab up?",
            sock.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let text = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: admin\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// Run `action` with `params` in lab `lab`; the answer's JSON.
pub fn call(
    lab: &str,
    action: &str,
    params: serde_json::Map<String, Value>,
) -> anyhow::Result<Value> {
    let plan = state::load(lab)?.plan;
    let (code, body) = post(
        &plan.admin_socket(),
        "/_emulator/call",
        &json!({"action": action, "params": params}),
    )?;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    if !(200..300).contains(&code) {
        anyhow::bail!(
            "{action}: {} {}",
            v["Code"].as_str().unwrap_or("error"),
            v["Message"].as_str().unwrap_or(&body)
        );
    }
    Ok(v)
}

/// `terway-lab api …`.
pub fn run(args: ApiArgs) -> anyhow::Result<()> {
    let lab = state::resolve_lab(args.lab.as_deref())?;
    let v = call(&lab, &args.action, parse_params(&args.params)?)?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_split_at_the_first_equals_sign() {
        let m = parse_params(&["SourceCidrIp=10.0.0.0/8".into(), "Description=a=b".into()])
            .expect("ok");
        assert_eq!(m["SourceCidrIp"], "10.0.0.0/8");
        assert_eq!(m["Description"], "a=b");
        assert!(parse_params(&["oops".into()]).is_err());
        assert!(parse_params(&["=x".into()]).is_err());
    }
}

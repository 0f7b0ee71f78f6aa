//! The only place the fabric touches the kernel: `ip` (one `-batch` process per update), `nft` (one atomic
//! ruleset per update) and `sysctl`, always aimed at a named namespace the fabric created (`ip -n`,
//! `ip netns exec`). Nothing here can address the root namespace: every entry point takes the namespace name.
//!
//! Shelling out keeps the emulator free of a second netlink stack and makes every step reproducible by hand
//! (errors print the exact command); one process per *update* (not per route) keeps the cost at a few ms.

use std::io::Write;
use std::process::{Command, Stdio};

use super::error::{FabricError, FabricResult};

/// Run a program with `stdin` fed from `input`; error out with its stderr on a non-zero exit.
fn run(program: &str, args: &[&str], input: Option<&str>, context: &str) -> FabricResult<String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| FabricError::Spawn {
        program: program.to_string(),
        context: context.to_string(),
        source,
    })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error shows up as the command's own failure below; keep its stderr instead.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| FabricError::Spawn {
            program: program.to_string(),
            context: context.to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut command = format!("{program} {}", args.join(" "));
        if let Some(text) = input {
            command.push_str(&format!(" <<EOF\n{}EOF", text));
        }
        Err(FabricError::Command {
            command,
            context: context.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Run `ip -n <netns> <args…>`.
pub(crate) fn ip(netns: &str, args: &[&str], context: &str) -> FabricResult<String> {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    run("ip", &full, None, context)
}

/// Run many `ip` commands inside `netns` in one process (`ip -n <netns> -batch -`); stops at the first error.
pub(crate) fn ip_batch(netns: &str, lines: &[String], context: &str) -> FabricResult<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut script = lines.join("\n");
    script.push('\n');
    run("ip", &["-n", netns, "-batch", "-"], Some(&script), context).map(|_| ())
}

/// Like [`ip_batch`] but keeps going past errors (`-force`): for teardown, where part may already be gone.
pub(crate) fn ip_batch_force(netns: &str, lines: &[String], context: &str) -> FabricResult<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut script = lines.join("\n");
    script.push('\n');
    run(
        "ip",
        &["-n", netns, "-force", "-batch", "-"],
        Some(&script),
        context,
    )
    .map(|_| ())
}

/// Apply an nft script inside `netns` atomically (`nft -f -` is one transaction).
pub(crate) fn nft_apply(netns: &str, script: &str, context: &str) -> FabricResult<()> {
    run(
        "ip",
        &["netns", "exec", netns, "nft", "-f", "-"],
        Some(script),
        context,
    )
    .map(|_| ())
}

/// Read the ruleset of one table inside `netns` (`nft list table …`).
pub(crate) fn nft_list(
    netns: &str,
    family: &str,
    table: &str,
    context: &str,
) -> FabricResult<String> {
    run(
        "ip",
        &[
            "netns", "exec", netns, "nft", "list", "table", family, table,
        ],
        None,
        context,
    )
}

/// Set per-namespace sysctls (`key=value` pairs) inside `netns`.
pub(crate) fn sysctls(netns: &str, pairs: &[&str], context: &str) -> FabricResult<()> {
    let mut args = vec!["netns", "exec", netns, "sysctl", "-q", "-w"];
    args.extend_from_slice(pairs);
    run("ip", &args, None, context).map(|_| ())
}

/// Create the named namespace (`ip netns add`); an existing one is an error so two labs never share one.
pub(crate) fn netns_add(name: &str) -> FabricResult<()> {
    run(
        "ip",
        &["netns", "add", name],
        None,
        "create network namespace",
    )
    .map(|_| ())
}

/// Delete the named namespace; a missing one is fine.
pub(crate) fn netns_del(name: &str) -> FabricResult<()> {
    if !netns_exists(name) {
        return Ok(());
    }
    run(
        "ip",
        &["netns", "del", name],
        None,
        "delete network namespace",
    )
    .map(|_| ())
}

/// Whether `/run/netns/<name>` exists.
pub(crate) fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Names of the links inside `netns` (`ip -o link show`), without the `@peer` suffix.
pub(crate) fn link_names(netns: &str) -> FabricResult<Vec<String>> {
    let out = ip(netns, &["-o", "link", "show"], "list links")?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect())
}

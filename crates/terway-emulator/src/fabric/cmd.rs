//! `nft` inside a named namespace the fabric created (`ip netns exec <ns> nft …`): one atomic ruleset per
//! update, and reading it back. Every entry point takes the namespace name, so nothing here can address the
//! root namespace. Errors print the exact command, so a failure can be reproduced by hand.

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

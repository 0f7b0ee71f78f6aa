//! nftables through the `nft` binary: one script per call, which nft applies as one atomic transaction, run
//! inside a given namespace.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::error::{Error, Result};
use crate::netns::Netns;

/// Run `nft -f -` inside `netns` with `script` on stdin; `what` says what the script is for, so a failure
/// names it (e.g. "symmetric routing", "NetworkPolicy of pod x/a").
pub fn apply(netns: &Netns, script: &str, what: &str) -> Result<()> {
    let script = script.to_string();
    let out = netns
        .run(move || -> std::io::Result<Output> {
            let mut child = Command::new("nft")
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(script.as_bytes())?;
            }
            child.wait_with_output()
        })?
        .map_err(|e| not_run(what, &e))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "nft (nftables) refused the {what} update in {}: {}",
            netns.path().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// `nft <args>` inside `netns`: its stdout when it succeeds, `None` when nft answers with an error (such as
/// a table that does not exist).
pub fn query(netns: &Netns, args: &[&str], what: &str) -> Result<Option<String>> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = netns
        .run(move || Command::new("nft").args(&args).output())?
        .map_err(|e| not_run(what, &e))?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn not_run(what: &str, e: &std::io::Error) -> Error {
    Error::Invalid(format!(
        "could not run nft (nftables) for {what}: {e}; install nftables on the node (scripts/prereqs.sh does)"
    ))
}

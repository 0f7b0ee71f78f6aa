//! The plugin entry point: parse the invocation, call the plugin's handler, print the result or the
//! spec error JSON, and return the exit status. Nothing a caller feeds in can make it panic or print
//! a backtrace: handler panics are caught and reported as error 103.

use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::Value;

use crate::config::sniff_version;
use crate::env::RawEnv;
use crate::error::CniError;
use crate::request::CniRequest;
use crate::result::CniResult;
use crate::version::{version_reply, CniVersion};

/// What a handler returns on success: a result for ADD, nothing for DEL/CHECK/STATUS/GC.
pub type HandlerOutput = Option<CniResult>;

/// Run one invocation with explicit inputs. Writes the reply (or the error JSON) to `stdout` and
/// returns the exit status: 0 on success, non-zero with the error JSON otherwise.
pub fn run<F>(raw_env: &RawEnv, stdin: &[u8], stdout: &mut dyn Write, handler: F) -> i32
where
    F: FnOnce(CniRequest) -> Result<HandlerOutput, CniError>,
{
    let fallback_version = sniff_version(stdin).unwrap_or(CniVersion::LATEST);
    let outcome = catch_unwind(AssertUnwindSafe(|| dispatch(raw_env, stdin, handler)));
    let (version, reply) = match outcome {
        Ok((version, reply)) => (version.unwrap_or(fallback_version), reply),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let err = CniError::internal("internal error in the terway plugin")
                .with_details(format!("{what}; please report this as a bug"));
            (fallback_version, Err(err))
        }
    };
    match reply {
        Ok(None) => 0,
        Ok(Some(json)) => match write_json(stdout, &json) {
            Ok(()) => 0,
            // Stdout is gone: nothing more can be reported, but the runtime must see a failure.
            Err(_) => CniError::io("").exit_code(),
        },
        Err(err) => {
            let _ = write_json(stdout, &err.to_json(version));
            err.exit_code()
        }
    }
}

fn dispatch<F>(
    raw_env: &RawEnv,
    stdin: &[u8],
    handler: F,
) -> (Option<CniVersion>, Result<Option<Value>, CniError>)
where
    F: FnOnce(CniRequest) -> Result<HandlerOutput, CniError>,
{
    let request = match CniRequest::from_env_and_stdin(raw_env, stdin) {
        Ok(r) => r,
        Err(e) => return (None, Err(e)),
    };
    if let CniRequest::Version = request {
        return (Some(CniVersion::LATEST), Ok(Some(version_reply())));
    }
    let version = request.cni_version();
    let is_add = matches!(request, CniRequest::Add(_));
    let reply = match handler(request) {
        Ok(Some(result)) if is_add => Ok(Some(result.to_json_for_version(version))),
        Ok(_) if is_add => Err(CniError::internal("the plugin returned no result for ADD")),
        // The spec says DEL, CHECK, STATUS and GC print nothing on success.
        Ok(_) => Ok(None),
        Err(e) => Err(e),
    };
    (Some(version), reply)
}

fn write_json(out: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Run as a process: read the real environment and stdin, write stdout, and return the exit
/// status for `std::process::exit`. Installs a silent panic hook so no backtrace reaches stderr.
pub fn run_process<F>(handler: F) -> i32
where
    F: FnOnce(CniRequest) -> Result<HandlerOutput, CniError>,
{
    std::panic::set_hook(Box::new(|_| {}));
    let mut stdout = std::io::stdout().lock();
    let raw_env = match RawEnv::from_process() {
        Ok(e) => e,
        Err(e) => {
            let _ = write_json(&mut stdout, &e.to_json(CniVersion::LATEST));
            return e.exit_code();
        }
    };
    let mut stdin = Vec::new();
    // VERSION may come without stdin; a read failure elsewhere is an I/O error (code 5).
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut stdin) {
        if raw_env.command.as_deref() != Some("VERSION") {
            let err = CniError::io(format!(
                "cannot read the network configuration from stdin: {e}"
            ));
            let _ = write_json(&mut stdout, &err.to_json(CniVersion::LATEST));
            return err.exit_code();
        }
    }
    run(&raw_env, &stdin, &mut stdout, handler)
}

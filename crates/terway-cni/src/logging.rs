//! Logging: with `debug` on, append to the log file (Terway's /var/log/terway.cni.log by default);
//! otherwise only warnings and errors go to stderr, which runtimes capture. Never to stdout (the protocol).

use std::fs::OpenOptions;

use tracing_subscriber::EnvFilter;

use crate::config::PluginConf;

/// Keeps the subscriber installed for the process lifetime.
pub struct LogGuard;

/// Install the subscriber once; a failure to open the log file falls back to stderr.
pub fn init(conf: &PluginConf) -> LogGuard {
    if conf.terway.debug {
        if let Some(dir) = conf.log_file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(file) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&conf.log_file)
        {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new("debug"))
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init();
            return LogGuard;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    LogGuard
}

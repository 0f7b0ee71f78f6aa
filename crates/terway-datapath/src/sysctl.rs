//! Sysctls of a network namespace. `/proc/sys/net` shows the namespace of the task that opens it, so reads
//! and writes run on a thread that has entered the namespace ([`Netns::run`]).

use std::io;

use crate::error::{Error, Result};
use crate::netns::Netns;

fn key_path(key: &str) -> String {
    // Dotted keys (`net.ipv4.conf.eth0.rp_filter`); interface names here never contain dots.
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Write `value` to sysctl `key` inside `ns`, skipping the write when it already holds that value.
pub fn ensure_sysctl(ns: &Netns, key: &str, value: &str) -> Result<()> {
    let path = key_path(key);
    let wanted = value.to_string();
    ns.run(move || -> io::Result<()> {
        if std::fs::read_to_string(&path).is_ok_and(|cur| cur.trim() == wanted) {
            return Ok(());
        }
        std::fs::write(&path, wanted.as_bytes())
    })?
    .map_err(|source| Error::Sysctl {
        key: key.to_string(),
        source,
    })
}

/// Read sysctl `key` inside `ns` (trimmed).
pub fn read_sysctl(ns: &Netns, key: &str) -> Result<String> {
    let path = key_path(key);
    ns.run(move || std::fs::read_to_string(&path).map(|s| s.trim().to_string()))?
        .map_err(|source| Error::Sysctl {
            key: key.to_string(),
            source,
        })
}

/// Write several sysctls in one thread hop; stops at the first failure.
pub fn ensure_sysctls(ns: &Netns, pairs: &[(String, String)]) -> Result<()> {
    let owned: Vec<(String, String)> = pairs.to_vec();
    ns.run(move || -> Result<()> {
        for (k, v) in &owned {
            let path = key_path(k);
            if std::fs::read_to_string(&path).is_ok_and(|cur| cur.trim() == v) {
                continue;
            }
            std::fs::write(&path, v.as_bytes()).map_err(|source| Error::Sysctl {
                key: k.clone(),
                source,
            })?;
        }
        Ok(())
    })?
}

/// Per-link IPv4 sysctl key, e.g. `link_key("cali1", "rp_filter")` = `net.ipv4.conf.cali1.rp_filter`.
pub fn ipv4_link_key(ifname: &str, leaf: &str) -> String {
    format!("net.ipv4.conf.{ifname}.{leaf}")
}

/// Per-link IPv6 sysctl key.
pub fn ipv6_link_key(ifname: &str, leaf: &str) -> String {
    format!("net.ipv6.conf.{ifname}.{leaf}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dotted_keys_map_to_proc_paths() {
        assert_eq!(
            super::key_path("net.ipv4.conf.all.rp_filter"),
            "/proc/sys/net/ipv4/conf/all/rp_filter"
        );
    }
}

//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`,
//! `CNI_PATH`, with the spec's per-command requirements and value rules.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::error::CniError;

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Attach a container to the network.
    Add,
    /// Detach a container (must tolerate missing state).
    Del,
    /// Verify an attachment is as expected (0.4.0+).
    Check,
    /// Report supported versions.
    Version,
    /// Is the plugin ready to serve ADD (1.1.0)?
    Status,
    /// Remove resources of attachments not in the valid list (1.1.0).
    Gc,
}

impl Command {
    /// Parse `CNI_COMMAND`.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        match s {
            "ADD" => Ok(Command::Add),
            "DEL" => Ok(Command::Del),
            "CHECK" => Ok(Command::Check),
            "VERSION" => Ok(Command::Version),
            "STATUS" => Ok(Command::Status),
            "GC" => Ok(Command::Gc),
            other => Err(CniError::invalid_env(format!(
                "unknown CNI_COMMAND {other:?}; expected ADD, DEL, CHECK, VERSION, STATUS or GC"
            ))),
        }
    }

    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Commands that act on one container attachment.
    pub fn is_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the container's network namespace is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NetnsPath {
    /// A bind-mounted named namespace such as `/run/netns/X` or `/var/run/netns/cni-…`.
    Named {
        /// Full path.
        path: PathBuf,
        /// The file name (the `ip netns` name).
        name: String,
    },
    /// A process's namespace, `/proc/<pid>/ns/net`.
    Process {
        /// Full path.
        path: PathBuf,
        /// The process ID.
        pid: u32,
    },
    /// Any other absolute path (e.g. Docker's `/var/run/docker/netns/…`).
    Other(PathBuf),
}

impl NetnsPath {
    /// Check and classify a `CNI_NETNS` value: it must be an absolute path without NUL bytes.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        if !s.starts_with('/') || s.contains('\0') {
            return Err(CniError::invalid_env(format!(
                "CNI_NETNS {s:?} must be an absolute path such as /var/run/netns/cni-1234"
            )));
        }
        let path = PathBuf::from(s);
        if let Some(pid) = s
            .strip_prefix("/proc/")
            .and_then(|r| r.strip_suffix("/ns/net"))
        {
            if let Ok(pid) = pid.parse::<u32>() {
                return Ok(NetnsPath::Process { path, pid });
            }
        }
        for dir in ["/run/netns/", "/var/run/netns/"] {
            if let Some(name) = s.strip_prefix(dir) {
                if !name.is_empty() && !name.contains('/') {
                    return Ok(NetnsPath::Named {
                        name: name.to_string(),
                        path,
                    });
                }
            }
        }
        Ok(NetnsPath::Other(path))
    }

    /// The path to open.
    pub fn path(&self) -> &std::path::Path {
        match self {
            NetnsPath::Named { path, .. }
            | NetnsPath::Process { path, .. }
            | NetnsPath::Other(path) => path,
        }
    }
}

/// Check a container ID the way the spec says: non-empty, starting with an alphanumeric character,
/// then alphanumerics, `_`, `.` or `-`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    match chars.next() {
        None => return Err(CniError::invalid_env("CNI_CONTAINERID is empty")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(
                CniError::invalid_env("invalid characters in CNI_CONTAINERID")
                    .with_details(id.to_string()),
            )
        }
        _ => {}
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(
            CniError::invalid_env("invalid characters in CNI_CONTAINERID")
                .with_details(id.to_string()),
        )
    }
}

/// Longest interface name Linux accepts (IFNAMSIZ − 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Check an interface name: 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = |why: &str| Err(CniError::invalid_env(format!("CNI_IFNAME {name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad("is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("is not a valid interface name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return bad("contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

/// Parsed `CNI_ARGS` (`K=V;K=V`), with the Kubernetes keys kubelet/containerd set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `IgnoreUnknown` was set true.
    pub ignore_unknown: bool,
    /// `K8S_POD_NAMESPACE`.
    pub k8s_pod_namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub k8s_pod_name: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub k8s_pod_infra_container_id: Option<String>,
    /// `K8S_POD_UID`.
    pub k8s_pod_uid: Option<String>,
    /// Other keys (only possible with `IgnoreUnknown`).
    pub other: BTreeMap<String, String>,
}

/// Keys `CniArgs` understands.
const KNOWN_ARGS: [&str; 5] = [
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// Go's `strconv.ParseBool`, which the reference `IgnoreUnknown` handling uses.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl CniArgs {
    /// Parse `CNI_ARGS`. Every non-empty `;`-separated item must be `KEY=VALUE`. Unknown keys are an
    /// error (code 4) unless `IgnoreUnknown` is true (`1`/`true`/`t`/…), as the spec's conventions say.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for item in s.split(';').filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some((k, v)) if !k.is_empty() => pairs.push((k, v)),
                _ => {
                    return Err(CniError::invalid_env(format!(
                        "CNI_ARGS: {item:?} is not a KEY=VALUE pair"
                    ))
                    .with_details(s.to_string()))
                }
            }
        }
        let mut args = CniArgs::default();
        for (k, v) in &pairs {
            if *k == "IgnoreUnknown" {
                args.ignore_unknown = parse_go_bool(v).ok_or_else(|| {
                    CniError::invalid_env(format!(
                        "CNI_ARGS: IgnoreUnknown={v:?} is not a boolean (1/0/true/false)"
                    ))
                })?;
            }
        }
        let mut unknown = Vec::new();
        for (k, v) in pairs {
            let value = Some(v.to_string());
            match k {
                "IgnoreUnknown" => {}
                "K8S_POD_NAMESPACE" => args.k8s_pod_namespace = value,
                "K8S_POD_NAME" => args.k8s_pod_name = value,
                "K8S_POD_INFRA_CONTAINER_ID" => args.k8s_pod_infra_container_id = value,
                "K8S_POD_UID" => args.k8s_pod_uid = value,
                other => {
                    unknown.push(other.to_string());
                    args.other.insert(other.to_string(), v.to_string());
                }
            }
        }
        if !unknown.is_empty() && !args.ignore_unknown {
            return Err(CniError::invalid_env(format!(
                "CNI_ARGS: unknown keys {unknown:?}; known keys are {KNOWN_ARGS:?} (set IgnoreUnknown=1 to allow others)"
            )));
        }
        Ok(args)
    }

    /// `(namespace, name)` when both Kubernetes keys are present and non-empty.
    pub fn pod(&self) -> Option<(&str, &str)> {
        match (
            self.k8s_pod_namespace.as_deref(),
            self.k8s_pod_name.as_deref(),
        ) {
            (Some(ns), Some(n)) if !ns.is_empty() && !n.is_empty() => Some((ns, n)),
            _ => None,
        }
    }
}

/// The raw CNI environment variables we read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEnv {
    /// `CNI_COMMAND`.
    pub command: Option<String>,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`.
    pub args: Option<String>,
    /// `CNI_PATH`.
    pub path: Option<String>,
}

impl RawEnv {
    /// Take the CNI variables from any key/value source (e.g. `std::env::vars()` or a test map).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut env = RawEnv::default();
        for (k, v) in pairs {
            let slot = match k.as_ref() {
                "CNI_COMMAND" => &mut env.command,
                "CNI_CONTAINERID" => &mut env.container_id,
                "CNI_NETNS" => &mut env.netns,
                "CNI_IFNAME" => &mut env.ifname,
                "CNI_ARGS" => &mut env.args,
                "CNI_PATH" => &mut env.path,
                _ => continue,
            };
            *slot = Some(v.into());
        }
        env
    }

    /// Read the process environment. A CNI variable that is not UTF-8 is an invalid-env error.
    pub fn from_process() -> Result<Self, CniError> {
        let mut pairs = Vec::new();
        for (k, v) in std::env::vars_os() {
            let Some(key) = k.to_str() else { continue };
            if !key.starts_with("CNI_") {
                continue;
            }
            let value = v
                .into_string()
                .map_err(|_| CniError::invalid_env(format!("{key} is not valid UTF-8")))?;
            pairs.push((key.to_string(), value));
        }
        Ok(Self::from_pairs(pairs))
    }
}

/// Validated environment for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// The command.
    pub command: Command,
    /// Container ID (ADD/DEL/CHECK; empty otherwise).
    pub container_id: String,
    /// Network namespace (required for ADD/CHECK; optional on DEL; absent otherwise).
    pub netns: Option<NetnsPath>,
    /// Interface name inside the container (ADD/DEL/CHECK; empty otherwise).
    pub ifname: String,
    /// Parsed CNI_ARGS.
    pub args: CniArgs,
    /// Directories of CNI_PATH.
    pub cni_path: Vec<PathBuf>,
}

impl CniEnv {
    /// Check the variables the spec requires for the command and parse them. Missing required
    /// variables are reported together (code 4).
    pub fn parse(raw: &RawEnv) -> Result<Self, CniError> {
        let command = match raw.command.as_deref() {
            None | Some("") => {
                return Err(CniError::invalid_env(
                    "required environment variable CNI_COMMAND is missing",
                ))
            }
            Some(c) => Command::parse(c)?,
        };
        let present = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        let mut missing = Vec::new();
        if command.is_attachment() {
            if !present(&raw.container_id) {
                missing.push("CNI_CONTAINERID");
            }
            if !present(&raw.ifname) {
                missing.push("CNI_IFNAME");
            }
        }
        if matches!(command, Command::Add | Command::Check) && !present(&raw.netns) {
            missing.push("CNI_NETNS");
        }
        if command != Command::Version && !present(&raw.path) {
            missing.push("CNI_PATH");
        }
        if !missing.is_empty() {
            return Err(CniError::invalid_env(format!(
                "required environment variables missing for {command}: {}",
                missing.join(", ")
            )));
        }
        let mut env = CniEnv {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: CniArgs::default(),
            cni_path: Vec::new(),
        };
        if command == Command::Version {
            return Ok(env);
        }
        env.cni_path = raw
            .path
            .as_deref()
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        if command.is_attachment() {
            let id = raw.container_id.clone().unwrap_or_default();
            validate_container_id(&id)?;
            let ifname = raw.ifname.clone().unwrap_or_default();
            validate_ifname(&ifname)?;
            env.container_id = id;
            env.ifname = ifname;
            env.netns = match raw.netns.as_deref() {
                Some(n) if !n.is_empty() => Some(NetnsPath::parse(n)?),
                _ => None,
            };
            env.args = CniArgs::parse(raw.args.as_deref().unwrap_or_default())?;
        }
        Ok(env)
    }
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;

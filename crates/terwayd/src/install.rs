//! `terwayd install-cni`: what a DaemonSet's init container does before terwayd starts — put the
//! `terway` plugin binary into the node's CNI bin directory and the conflist (the `10-terway.conflist`
//! key of eni-config) into its CNI config directory. Both land by rename, so a container runtime
//! reading them at that moment sees the old file or the new one, never half of one; a conflist that
//! does not name a valid `terway` plugin is refused before anything is written.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Arguments of `install-cni`.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// The plugin binary to install (in the image).
    #[arg(long, default_value = "/usr/bin/terway")]
    pub binary: PathBuf,
    /// The node's CNI bin directory (a hostPath).
    #[arg(long, default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// The conflist to install (eni-config's `10-terway.conflist`, mounted from the ConfigMap).
    #[arg(long, default_value = "/etc/eni/10-terway.conflist")]
    pub conflist: PathBuf,
    /// The node's CNI config directory (a hostPath).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
}

/// Check that `text` is a conflist whose first plugin is a valid `terway` entry.
pub fn check_conflist(text: &str) -> Result<(), String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("the conflist is not JSON: {e}"))?;
    let plugins = v
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or("the conflist has no \"plugins\" list")?;
    let first = plugins
        .first()
        .ok_or("the conflist's \"plugins\" list is empty")?;
    if first.get("type").and_then(Value::as_str) != Some("terway") {
        return Err("the conflist's first plugin must be of type \"terway\"".into());
    }
    if v.get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("the conflist has no \"name\"".into());
    }
    terway_core::TerwayCniConf::from_value(first)
        .and_then(|c| c.validate())
        .map_err(|e| format!("the terway plugin entry: {e}"))?;
    check_bandwidth_owner(&plugins[1..])
}

/// Refuse a chain with the `bandwidth` plugin after terway. terway shapes every pod with a bandwidth
/// annotation itself (the daemon reads `kubernetes.io/*-bandwidth` and `k8s.aliyun.com/*-bandwidth`,
/// whatever the runtime passes) by replacing the root qdisc of the pod's links, so the other plugin's
/// ADD then fails with a bare "create qdisc: file exists" and the pod stays ContainerCreating.
fn check_bandwidth_owner(rest: &[Value]) -> Result<(), String> {
    if rest
        .iter()
        .any(|p| p.get("type").and_then(Value::as_str) == Some("bandwidth"))
    {
        return Err(
            "the conflist chains the `bandwidth` plugin after terway: terway owns pod bandwidth (tbf \
             on eth0 and the host veth, from the pod's kubernetes.io/ingress-bandwidth and \
             egress-bandwidth annotations), so the `bandwidth` plugin's ADD would fail with \"file \
             exists\" on every annotated pod; remove `bandwidth` from the chain"
                .into(),
        );
    }
    Ok(())
}

/// Write `bytes` to `dest` through a temporary file in the same directory and a rename.
fn put(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dest
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", dest.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} has no file name", dest.display()))?;
    let tmp = dir.join(format!(".{name}.terwayd-install"));
    std::fs::write(&tmp, bytes).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("rename into {}: {e}", dest.display())
    })
}

/// Install the plugin and the conflist.
pub fn run(a: &InstallArgs) -> Result<(), String> {
    let conflist = std::fs::read_to_string(&a.conflist)
        .map_err(|e| format!("read {}: {e}", a.conflist.display()))?;
    check_conflist(&conflist).map_err(|e| format!("{}: {e}", a.conflist.display()))?;
    let binary =
        std::fs::read(&a.binary).map_err(|e| format!("read {}: {e}", a.binary.display()))?;
    let bin = a.bin_dir.join("terway");
    put(&bin, &binary, 0o755)?;
    let conf = a.conf_dir.join("10-terway.conflist");
    put(&conf, conflist.as_bytes(), 0o644)?;
    eprintln!(
        "terwayd install-cni: {} and {} installed",
        bin.display(),
        conf.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"terway","plugins":[{"type":"terway","eniip_virtual_type":"veth"}]}"#;

    #[test]
    fn only_a_terway_conflist_is_installed() {
        assert_eq!(check_conflist(GOOD), Ok(()));
        for (bad, why) in [
            ("{", "not JSON"),
            (r#"{"name":"x"}"#, "no \"plugins\""),
            (r#"{"name":"x","plugins":[]}"#, "empty"),
            (
                r#"{"name":"x","plugins":[{"type":"bridge"}]}"#,
                "type \"terway\"",
            ),
            (r#"{"plugins":[{"type":"terway"}]}"#, "no \"name\""),
            (
                r#"{"name":"x","plugins":[{"type":"terway","capabilities":{"bandwidth":true}},
                    {"type":"bandwidth","capabilities":{"bandwidth":true}}]}"#,
                "remove `bandwidth` from the chain",
            ),
        ] {
            let e = check_conflist(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn terway_owns_pod_bandwidth_and_other_plugins_may_follow_it() {
        let portmap = r#"{"name":"x","plugins":[{"type":"terway","capabilities":{"bandwidth":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;
        assert_eq!(check_conflist(portmap), Ok(()));
        // Without terway's capability the daemon still shapes annotated pods: refused as well.
        let e = check_conflist(
            r#"{"name":"x","plugins":[{"type":"terway"},{"type":"bandwidth","capabilities":{"bandwidth":true}}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("terway owns pod bandwidth"), "{e}");
    }

    /// The ConfigMap users apply from `deploy/` must load: its eni_conf and its conflist.
    #[test]
    fn the_shipped_eni_config_loads() {
        #[derive(serde::Deserialize)]
        struct ConfigMap {
            data: std::collections::BTreeMap<String, String>,
        }
        let cm: ConfigMap =
            serde_saphyr::from_str(include_str!("../../../deploy/eni-config.yaml")).unwrap();
        let conf = terway_core::EniConf::from_json(&cm.data["eni_conf"]).unwrap();
        assert!(conf.unknown_keys().is_empty(), "{:?}", conf.unknown_keys());
        assert_eq!(check_conflist(&cm.data["10-terway.conflist"]), Ok(()));
    }

    #[test]
    fn files_land_whole_with_their_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("terway");
        std::fs::write(&src, b"\x7fELF plugin").unwrap();
        let list = dir.path().join("10-terway.conflist");
        std::fs::write(&list, GOOD).unwrap();
        let a = InstallArgs {
            binary: src,
            bin_dir: dir.path().join("host/opt/cni/bin"),
            conflist: list,
            conf_dir: dir.path().join("host/etc/cni/net.d"),
        };
        run(&a).unwrap();
        let bin = a.bin_dir.join("terway");
        assert_eq!(std::fs::read(&bin).unwrap(), b"\x7fELF plugin");
        assert_eq!(
            std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read_to_string(a.conf_dir.join("10-terway.conflist")).unwrap(),
            GOOD
        );
        // Run again (a restarted init container): same result, no temporary files left.
        run(&a).unwrap();
        let names: Vec<_> = std::fs::read_dir(&a.bin_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["terway"]);
        // A bad conflist writes nothing.
        std::fs::write(&a.conflist, "{").unwrap();
        std::fs::remove_file(&bin).unwrap();
        assert!(run(&a).is_err());
        assert!(!bin.exists());
    }
}

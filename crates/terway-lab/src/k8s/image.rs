//! The `terway-rs/terwayd` container image, assembled from this workspace's binaries: `terwayd`,
//! `terway` (what the init step installs on the node), `terway-cli` (the readiness probe) and
//! `terway-controlplane` (the Deployment runs the same image), Debian's `nft`, debug
//! info stripped, with the shared libraries `ldd` names and the machine's CA bundle, as one layer of a docker-archive tar (what
//! `ctr images import` reads). No registry and no image builder is needed, and the image holds
//! exactly the binaries under test.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The image the DaemonSet of deploy/ runs (`deploy/daemonset.yaml` names the same).
pub fn terwayd_image() -> String {
    format!("terway-rs/terwayd:{}", env!("CARGO_PKG_VERSION"))
}

/// The CA bundle the image carries (Debian's ca-certificates).
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The binaries in the image, at `/usr/bin/<name>`.
pub const BINARIES: [&str; 4] = ["terwayd", "terway", "terway-cli", "terway-controlplane"];

/// Machine tools the image carries at the same path, with their libraries: terwayd programs the node's
/// symmetric routing with `nft` (Debian's nftables).
pub const TOOLS: [&str; 1] = ["/usr/sbin/nft"];

/// The absolute library paths in `ldd` output (`libc.so.6 => /lib/…/libc.so.6 (0x…)`, and the loader
/// line `/lib64/ld-linux-x86-64.so.2 (0x…)`); the vDSO has no file.
pub fn ldd_paths(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = run(
        Command::new("sha256sum").arg(path),
        &format!("hash {}", path.display()),
    )?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("sha256sum printed nothing for {}", path.display()))
}

/// The OCI name of this machine's architecture (the binaries' own).
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The image config: entrypoint terwayd, one layer.
fn config_json(diff_id: &str) -> serde_json::Value {
    serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {"Entrypoint": ["/usr/bin/terwayd"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created_by": "terway-lab (k8s::image)"}],
    })
}

/// Build the image into `dir` (a scratch directory of the lab) and return the path of its tar.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("usr/bin"))?;
    std::fs::create_dir_all(root.join("tmp"))?;
    // A file of this machine, copied to the same absolute path in the image (fs::copy follows a
    // symlink: the image holds the file itself under the name asked for).
    let copy_in = |src: &Path, what: &str| -> anyhow::Result<()> {
        let dest = root.join(src.strip_prefix("/").unwrap_or(src));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(src, &dest)
            .with_context(|| format!("copy {} into the terwayd image{what}", src.display()))?;
        Ok(())
    };
    let mut libs = std::collections::BTreeSet::new();
    for name in BINARIES {
        let src = crate::procs::find_binary(name)?;
        run(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(root.join("usr/bin").join(name))
                .arg(&src),
            &format!("copy {} into the terwayd image", src.display()),
        )?;
        let out = run(
            Command::new("ldd").arg(&src),
            &format!("list the libraries of {}", src.display()),
        )?;
        libs.extend(ldd_paths(&out));
    }
    for tool in TOOLS {
        let src = Path::new(tool);
        copy_in(src, " (install Debian's nftables)")?;
        let out = run(
            Command::new("ldd").arg(src),
            &format!("list the libraries of {tool}"),
        )?;
        libs.extend(ldd_paths(&out));
    }
    for lib in &libs {
        copy_in(lib, "")?;
    }
    // The cloud client verifies TLS against the system's roots and refuses to start without any
    // (the real OpenAPI is HTTPS): the image carries the machine's bundle, as a distro image would.
    copy_in(Path::new(CA_BUNDLE), " (install Debian's ca-certificates)")?;
    let layer = dir.join("layer.tar");
    run(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-C",
            ])
            .arg(&root)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
        "pack the terwayd image layer",
    )?;
    let config = serde_json::to_vec(&config_json(&sha256(&layer)?))?;
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, &config)?;
    let cfg_name = format!("{}.json", sha256(&cfg_path)?);
    std::fs::rename(&cfg_path, dir.join(&cfg_name))?;
    let manifest = serde_json::json!([{
        "Config": cfg_name,
        "RepoTags": [terwayd_image()],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest)?)?;
    let out = dir.join("terwayd.tar");
    run(
        Command::new("tar")
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(&out)
            .args(["manifest.json", &cfg_name, "layer.tar"]),
        "pack the terwayd image",
    )?;
    // The tar holds it all; the staging copies would only double the lab's disk use.
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(&layer);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_yields_library_files_only() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f67)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f67)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f67)\n";
        assert_eq!(
            ldd_paths(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn the_daemonset_runs_the_image_the_lab_builds() {
        let ds = include_str!("../../../../deploy/daemonset.yaml");
        assert_eq!(
            ds.matches(&format!("image: {}", terwayd_image())).count(),
            2,
            "deploy/daemonset.yaml must run {} in both containers",
            terwayd_image()
        );
        let cp = include_str!("../../../../deploy/controlplane.yaml");
        assert_eq!(
            cp.matches(&format!("image: {}", terwayd_image())).count(),
            1,
            "deploy/controlplane.yaml must run {}",
            terwayd_image()
        );
    }
}

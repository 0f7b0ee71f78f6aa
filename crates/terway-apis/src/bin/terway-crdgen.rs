//! Writes Terway's CRD manifests and a kustomization into a directory
//! (default: `deploy/crds` under the workspace root).
//!
//! Usage: `cargo run -p terway-apis --bin terway-crdgen [OUT_DIR]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::{env, fs};

use terway_apis::{generated_files, GENERATED_HEADER};

/// `deploy/crds` under the workspace root (two levels above this crate).
fn default_out_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.ancestors().nth(2).unwrap_or(crate_dir);
    root.join("deploy/crds")
}

/// Removes generated manifests in `dir` that are no longer produced.
fn remove_stale(dir: &Path, keep: &[String]) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.ends_with(".yaml") || keep.iter().any(|k| k == name) {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap_or_default();
        if text.starts_with(GENERATED_HEADER) {
            fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("removed stale {}", path.display());
        }
    }
    Ok(())
}

fn run() -> Result<(), String> {
    let mut args = env::args_os().skip(1);
    let out_dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(default_out_dir);
    if args.next().is_some() {
        return Err("usage: terway-crdgen [OUT_DIR]".to_owned());
    }
    let files = generated_files().map_err(|e| e.to_string())?;
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    for (name, contents) in &files {
        let path = out_dir.join(name);
        fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    let names: Vec<String> = files.into_iter().map(|(n, _)| n).collect();
    remove_stale(&out_dir, &names)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terway-crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}

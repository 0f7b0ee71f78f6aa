//! Crash-consistent persistence: the world is written as JSON to a temporary file, synced, and renamed
//! over the state file after every mutating call, so a crash leaves either the old or the new state,
//! never a torn one. Writes carry a generation so a slow writer never overwrites newer state.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::EmulatorError;
use crate::world::World;

/// Writes the world to one file.
pub struct Persister {
    path: Option<PathBuf>,
    /// Generation last written (serialises writers).
    written: Mutex<u64>,
}

impl Persister {
    /// Persist to `path` (nothing is written when `None`).
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            written: Mutex::new(0),
        }
    }

    /// Whether a state file is configured.
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Load the world from the state file if it exists.
    pub fn load(&self) -> Result<Option<World>, EmulatorError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(state_err(path, e.to_string())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| state_err(path, format!("not a valid state: {e}")))
    }

    /// Write serialised state of generation `generation` unless a newer one was written already.
    pub fn write(&self, generation: u64, json: &[u8]) -> Result<(), EmulatorError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if generation < *written {
            return Ok(());
        }
        let tmp = path.with_extension("tmp");
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        result.map_err(|e| state_err(path, e.to_string()))?;
        *written = generation;
        Ok(())
    }
}

fn state_err(path: &Path, why: String) -> EmulatorError {
    EmulatorError::State {
        path: path.to_path_buf(),
        why,
    }
}

//! A complete, validated CNI invocation: environment + stdin → [`CniRequest`], one variant per
//! command, each carrying exactly what the spec guarantees for that command.

use std::path::PathBuf;

use crate::config::{NetConf, ValidAttachment};
use crate::env::{CniArgs, CniEnv, Command, NetnsPath, RawEnv};
use crate::error::CniError;
use crate::version::CniVersion;

/// ADD, DEL or CHECK of one container attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentRequest {
    /// Container ID (validated).
    pub container_id: String,
    /// Network namespace; always set for ADD/CHECK, optional for DEL.
    pub netns: Option<NetnsPath>,
    /// Interface name inside the container (validated).
    pub ifname: String,
    /// Parsed CNI_ARGS.
    pub args: CniArgs,
    /// CNI_PATH directories.
    pub cni_path: Vec<PathBuf>,
    /// Network configuration.
    pub config: NetConf,
}

/// GC: clean up everything of this network not in `valid_attachments`.
#[derive(Debug, Clone, PartialEq)]
pub struct GcRequest {
    /// CNI_PATH directories.
    pub cni_path: Vec<PathBuf>,
    /// Network configuration.
    pub config: NetConf,
    /// Attachments the runtime still uses (empty list = none).
    pub valid_attachments: Vec<ValidAttachment>,
}

/// STATUS: can the plugin serve ADD now?
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRequest {
    /// CNI_PATH directories.
    pub cni_path: Vec<PathBuf>,
    /// Network configuration.
    pub config: NetConf,
}

/// One validated CNI invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum CniRequest {
    /// Attach.
    Add(AttachmentRequest),
    /// Detach (tolerates missing state and an absent netns).
    Del(AttachmentRequest),
    /// Verify.
    Check(AttachmentRequest),
    /// Readiness.
    Status(StatusRequest),
    /// Garbage collection.
    Gc(GcRequest),
    /// Report supported versions (answered by [`crate::run`] itself).
    Version,
}

impl CniRequest {
    /// Validate the environment and parse stdin as the spec prescribes for the command.
    pub fn from_env_and_stdin(raw: &RawEnv, stdin: &[u8]) -> Result<Self, CniError> {
        let env = CniEnv::parse(raw)?;
        if env.command == Command::Version {
            return Ok(CniRequest::Version);
        }
        let config = NetConf::parse(stdin)?;
        let need = |min: CniVersion| -> Result<(), CniError> {
            if config.cni_version < min {
                return Err(CniError::incompatible_version(format!(
                    "config version {} does not allow {}; it needs cniVersion {} or later",
                    config.cni_version, env.command, min
                )));
            }
            Ok(())
        };
        let CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            cni_path,
        } = env;
        let attachment = |config| AttachmentRequest {
            container_id,
            netns,
            ifname,
            args,
            cni_path: cni_path.clone(),
            config,
        };
        Ok(match command {
            Command::Add => CniRequest::Add(attachment(config)),
            Command::Del => CniRequest::Del(attachment(config)),
            Command::Check => {
                need(CniVersion::V0_4_0)?;
                CniRequest::Check(attachment(config))
            }
            Command::Status => {
                need(CniVersion::V1_1_0)?;
                CniRequest::Status(StatusRequest { cni_path, config })
            }
            Command::Gc => {
                need(CniVersion::V1_1_0)?;
                let valid_attachments = config.valid_attachments.clone().unwrap_or_default();
                CniRequest::Gc(GcRequest {
                    cni_path,
                    config,
                    valid_attachments,
                })
            }
            Command::Version => CniRequest::Version,
        })
    }

    /// The command.
    pub fn command(&self) -> Command {
        match self {
            CniRequest::Add(_) => Command::Add,
            CniRequest::Del(_) => Command::Del,
            CniRequest::Check(_) => Command::Check,
            CniRequest::Status(_) => Command::Status,
            CniRequest::Gc(_) => Command::Gc,
            CniRequest::Version => Command::Version,
        }
    }

    /// The network configuration (none for VERSION).
    pub fn config(&self) -> Option<&NetConf> {
        match self {
            CniRequest::Add(a) | CniRequest::Del(a) | CniRequest::Check(a) => Some(&a.config),
            CniRequest::Status(s) => Some(&s.config),
            CniRequest::Gc(g) => Some(&g.config),
            CniRequest::Version => None,
        }
    }

    /// The version replies must use: the config's, or the latest for VERSION.
    pub fn cni_version(&self) -> CniVersion {
        self.config().map_or(CniVersion::LATEST, |c| c.cni_version)
    }
}

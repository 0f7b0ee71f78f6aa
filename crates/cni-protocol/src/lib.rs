//! The CNI spec 1.1.0 protocol, written for Terway-rs: every verb (ADD, DEL, CHECK, VERSION, STATUS,
//! GC), configs of versions 0.3.0 – 1.1.0, the environment and CNI_ARGS rules, results in the shape
//! of the caller's version, and spec error JSON with a non-zero exit — without ever panicking.
//!
//! A plugin binary is a handler over [`CniRequest`]:
//!
//! ```
//! use cni_protocol::{run, CniError, CniRequest, CniResult, Interface, RawEnv};
//!
//! let env = RawEnv::from_pairs([
//!     ("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc123"), ("CNI_NETNS", "/var/run/netns/cni-1"),
//!     ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/opt/cni/bin"),
//!     ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
//! ]);
//! let stdin = br#"{"cniVersion":"0.4.0","name":"terway","type":"terway","mtu":1500}"#;
//! let mut out = Vec::new();
//! let code = run(&env, stdin, &mut out, |req| match req {
//!     CniRequest::Add(add) => {
//!         assert_eq!(add.args.pod(), Some(("default", "web-0")));
//!         assert_eq!(add.config.get("mtu").and_then(|v| v.as_u64()), Some(1500));
//!         let mut res = CniResult::new();
//!         let idx = res.add_interface(Interface { name: add.ifname.clone(), ..Default::default() });
//!         res.add_ip("10.0.0.5/24".parse().unwrap(), Some("10.0.0.253".parse().unwrap()), Some(idx));
//!         Ok(Some(res))
//!     }
//!     CniRequest::Del(_) | CniRequest::Check(_) | CniRequest::Status(_) | CniRequest::Gc(_) => Ok(None),
//!     CniRequest::Version => Err(CniError::internal("handled by run")),
//! });
//! assert_eq!(code, 0);
//! let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
//! assert_eq!(json["ips"][0]["version"], "4"); // 0.4.0 shape
//! ```
//!
//! In `main`, use [`run_process`] and `std::process::exit` with its return value.

#![warn(missing_docs)]

pub mod config;
pub mod conflist;
pub mod env;
pub mod error;
pub mod request;
pub mod result;
pub mod run;
pub mod version;

pub use config::{
    BandwidthEntry, NetConf, PortMapping, RuntimeConfig, RuntimeDns, ValidAttachment,
};
pub use env::{
    validate_container_id, validate_ifname, CniArgs, CniEnv, Command, NetnsPath, RawEnv,
};
pub use error::{codes, CniError};
pub use request::{AttachmentRequest, CniRequest, GcRequest, StatusRequest};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use run::{run, run_process, HandlerOutput};
pub use version::{version_reply, CniVersion};

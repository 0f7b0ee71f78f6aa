//! The lab's Kubernetes: a control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
//! in the VPC router's namespace, reachable from every node at [`crate::plan::K8S_API_ADDR`] like a managed
//! control-plane endpoint, and per node a containerd + kubelet in the node's network namespace and a
//! private mount namespace, whose CRI calls the real `terway` CNI. See docs/lab.md.

pub mod api;
pub mod cgroups;
pub mod cluster;
pub mod deploy;
pub mod image;
pub mod install;
pub mod node_files;
pub mod pki;
pub mod pods;
pub mod procs;

use std::path::{Path, PathBuf};

/// The Debian source package the servers are built from (also in `scripts/k8s-prereqs.sh`).
pub const K8S_PKG_VERSION: &str = "1.20.5+really1.20.2-1.1+deb12u1";
/// The sandbox (pause) image every node imports; containerd's `sandbox_image`.
pub const PAUSE_IMAGE: &str = "k8s.gcr.io/pause:3.2";
/// The workload image (Debian's busybox-static) pods of the lab run.
pub const WORKLOAD_IMAGE: &str = "terway-lab.local/workload:1";

/// Where the Kubernetes binaries and images were cached by `scripts/k8s-prereqs.sh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolbox {
    /// kube-apiserver, kube-controller-manager, kube-scheduler, kubelet.
    pub bin: PathBuf,
    /// `pause.tar`, `workload.tar` (docker-archive images).
    pub images: PathBuf,
}

impl Toolbox {
    /// The cache `scripts/k8s-prereqs.sh` filled (`TERWAY_K8S_CACHE` overrides its root), checked.
    pub fn find() -> anyhow::Result<Toolbox> {
        let root = std::env::var_os("TERWAY_K8S_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/terway-rs/kubernetes"));
        let dir = root.join(K8S_PKG_VERSION);
        let tb = Toolbox {
            bin: dir.join("bin"),
            images: dir.join("images"),
        };
        let mut missing: Vec<String> = [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
        ]
        .iter()
        .map(|b| tb.bin.join(b))
        .chain(
            ["pause.tar", "workload.tar"]
                .iter()
                .map(|i| tb.images.join(i)),
        )
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
        for tool in [
            "etcd",
            "containerd",
            "containerd-shim-runc-v2",
            "ctr",
            "runc",
            "kubectl",
            "openssl",
            "nsenter",
            "unshare",
            "strip",
            "ldd",
        ] {
            if crate::procs::find_binary(tool).is_err() {
                missing.push(tool.to_string());
            }
        }
        if missing.is_empty() {
            Ok(tb)
        } else {
            anyhow::bail!(
                "the Kubernetes lab needs {}; run scripts/k8s-prereqs.sh (as root, ~10 minutes the first time) \
                 or pass --no-k8s",
                missing.join(", ")
            )
        }
    }

    /// Path of a cached server binary.
    pub fn server(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

/// Files of the lab-wide Kubernetes parts, under the lab directory.
#[derive(Debug, Clone)]
pub struct LabPaths {
    /// `<lab>/k8s`.
    pub root: PathBuf,
}

impl LabPaths {
    /// Paths for the lab in `dir`.
    pub fn new(lab_dir: &Path) -> Self {
        LabPaths {
            root: lab_dir.join("k8s"),
        }
    }
    /// Certificates, keys, the token file.
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    /// etcd's data directory.
    pub fn etcd(&self) -> PathBuf {
        self.root.join("etcd")
    }
    /// Control-plane logs.
    pub fn log(&self, component: &str) -> PathBuf {
        self.root.join(format!("{component}.log"))
    }
    /// The administrator's kubeconfig (what `terway-lab kubectl` uses).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.root.join("admin.kubeconfig")
    }
    /// The CNI plugin directory every node's containerd executes plugins from.
    pub fn cni_bin(&self) -> PathBuf {
        self.root.join("cni-bin")
    }
}

/// Files of one node's containerd and kubelet, under the node directory.
#[derive(Debug, Clone)]
pub struct NodePaths {
    /// `<node>/k8s`.
    pub root: PathBuf,
}

impl NodePaths {
    /// Paths for the node in `node_dir`.
    pub fn new(node_dir: &Path) -> Self {
        NodePaths {
            root: node_dir.join("k8s"),
        }
    }
    /// A path below the node's Kubernetes directory.
    pub fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    /// containerd's gRPC socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.at("containerd/containerd.sock")
    }
    /// containerd's state directory (the CRI keeps pod network namespaces in `io.containerd.grpc.v1.cri/netns/`).
    pub fn containerd_state(&self) -> PathBuf {
        self.at("containerd/state")
    }
    /// The CNI configuration directory containerd reads.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.at("net.d")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_version_matches_the_install_script() {
        let script = include_str!("../../../../scripts/k8s-prereqs.sh");
        assert!(
            script.contains(&format!("K8S_PKG_VERSION=\"{K8S_PKG_VERSION}\"")),
            "scripts/k8s-prereqs.sh caches another version than the lab looks for"
        );
        assert!(script.contains("k8s.gcr.io/pause 3.2"));
        assert!(script.contains("terway-lab.local/workload 1"));
    }
}

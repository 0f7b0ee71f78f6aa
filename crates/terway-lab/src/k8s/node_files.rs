//! The files a Kubernetes lab node runs from: containerd's config, the KubeletConfiguration, the CNI
//! conflist containerd reads (Terway's `10-terway.conflist` shape, or the reference bridge chain), and
//! the script that prepares the node's private mount namespace. Pure text builders.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use super::{LabPaths, NodePaths, PAUSE_IMAGE};
use crate::plan::{LabPlan, NodeMode, NodePlan};

/// Root-namespace sysctls kubelet 1.20 writes at start (`setupKernelTunables`). The node's mount
/// namespace binds plain files over them, so kubelet writes into those and the machine keeps its values.
pub const GUARDED_SYSCTLS: &[&str] = &[
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
];

/// containerd's config: every path and socket under the node directory; pod network namespaces under
/// its state dir (not `/run/netns`). The CRI plugin runs the lab's CNI directory and conflist, or, when
/// terwayd runs as the DaemonSet (`standard_cni_paths`), the standard `/opt/cni/bin` and
/// `/etc/cni/net.d` the DaemonSet's init step installs into (the mount namespace binds both to the
/// node directory).
pub fn containerd_toml(lab: &LabPaths, node: &NodePaths, standard_cni_paths: bool) -> String {
    let p = |rel: &str| node.at(rel).display().to_string();
    let (cni_bin, conf_dir) = if standard_cni_paths {
        ("/opt/cni/bin".to_string(), "/etc/cni/net.d".to_string())
    } else {
        (
            lab.cni_bin().display().to_string(),
            node.cni_conf_dir().display().to_string(),
        )
    };
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
oom_score = 0

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  sandbox_image = "{pause}"
  # Without it every sandbox fails here (runc cannot raise oom_score_adj without CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  # Pod network namespaces live under the state dir: nothing else on the machine sees or removes them.
  netns_mounts_under_state_dir = true
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
"#,
        root = p("containerd/root"),
        state = node.containerd_state().display(),
        sock = node.containerd_socket().display(),
        opt = p("containerd/opt"),
        pause = PAUSE_IMAGE,
        cni_bin = cni_bin,
        conf_dir = conf_dir,
    )
}

/// The kubelet's pod limit for a node: what its ENIs can hold (Terway's formulas), 110 for VPC-route.
pub fn max_pods(mode: NodeMode, instance_type: &str) -> u32 {
    let spec = terway_emulator::catalogue::builtin()
        .into_iter()
        .find(|s| s.instance_type == instance_type);
    let Some(s) = spec else { return 110 };
    let limits = terway_core::InstanceLimits {
        eni_quantity: s.eni_quantity,
        eni_private_ip_address_quantity: s.eni_private_ip_quantity,
        eni_total_quantity: s.eni_total_quantity,
        eni_ipv6_address_quantity: s.eni_ipv6_quantity,
    };
    let mode = match mode {
        NodeMode::Shared => terway_core::Mode::Shared,
        NodeMode::Exclusive => terway_core::Mode::Exclusive,
        NodeMode::VpcRoute => terway_core::Mode::VpcRoute,
    };
    terway_core::limits::pod_limit(mode, &limits).unwrap_or(110)
}

/// The KubeletConfiguration of a node.
pub fn kubelet_yaml(node: &NodePlan, node_ip: Ipv4Addr, ca: &Path, cgroup_root: &str) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {node_ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
failSwapOn: false
# Otherwise kubelet edits iptables (in the node namespace, but nothing here needs those chains).
makeIPTablesUtilChains: false
nodeStatusUpdateFrequency: 2s
# kubelet's default API budget (5 requests/s, burst 10) throttles the status updates of a burst of pods:
# 30 pods took 24 s to Ready with it, 8.7 s with this (`bench k8s`).
kubeAPIQPS: 50
kubeAPIBurst: 100
serializeImagePulls: false
maxPods: {max_pods}
resolvConf: ""
# The images are imported, never pulled: image GC must never delete them, and the machine's disk
# use must not evict the lab's pods.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
# A pressure that has passed (another job filled the disk for a while) lifts in 30 s, not 5 min.
evictionPressureTransitionPeriod: 30s
"#,
        ca = ca.display(),
        max_pods = max_pods(node.mode, &node.instance_type),
    )
}

/// The conflist containerd reads: `terway` first (Terway's `10-terway.conflist`), talking to this node's
/// terwayd, then `portmap`; or the reference `bridge` + `host-local` chain on `bridge_subnet`.
pub fn conflist(node: &NodePlan, cni: crate::plan::NodeCni, bridge_subnet: Ipv4Net) -> Value {
    match cni {
        crate::plan::NodeCni::Terway => {
            let mut plugin = crate::node_files::cni_conf(node);
            if let Some(obj) = plugin.as_object_mut() {
                obj.remove("cniVersion");
                obj.remove("name");
            }
            // hostPort through Debian's `portmap`, as deploy/eni-config.yaml chains it.
            let portmap = json!({ "type": "portmap", "capabilities": { "portMappings": true } });
            json!({ "cniVersion": "1.0.0", "name": "terway", "plugins": [plugin, portmap] })
        }
        crate::plan::NodeCni::Bridge => json!({
            "cniVersion": "1.0.0",
            "name": "bridge",
            "plugins": [{
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": bridge_subnet.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": node.dir.join("k8s/host-local").display().to_string(),
                },
            }],
        }),
    }
}

/// The subnet the reference bridge chain hands out on the node with index `i`: /24s high in the PodCIDR
/// block, clear of the VPC-route nodes' PodCIDRs.
pub fn bridge_subnet(plan: &LabPlan, i: usize) -> Ipv4Net {
    let base = u32::from(plan.vpc_cidr.network()) + (1 << 16) + ((128 + i as u32) << 8);
    Ipv4Net::new(Ipv4Addr::from(base), 24).unwrap_or(plan.vpc_cidr)
}

/// Make `cni` the chain of node `index`: containerd notices the changed directory and reloads it.
pub fn switch_cni(plan: &LabPlan, index: usize, cni: crate::plan::NodeCni) -> anyhow::Result<()> {
    let node = plan
        .nodes
        .get(index)
        .ok_or_else(|| anyhow::anyhow!("lab {} has no node {index}", plan.name))?;
    let dir = NodePaths::new(&node.dir).cni_conf_dir();
    for other in [crate::plan::NodeCni::Terway, crate::plan::NodeCni::Bridge] {
        if other != cni {
            let _ = std::fs::remove_file(dir.join(conflist_name(other)));
        }
    }
    crate::state::write_json_atomic(
        &dir.join(conflist_name(cni)),
        &conflist(node, cni, bridge_subnet(plan, index)),
    )?;
    Ok(())
}

/// The conflist's file name.
pub fn conflist_name(cni: crate::plan::NodeCni) -> &'static str {
    match cni {
        crate::plan::NodeCni::Terway => "10-terway.conflist",
        crate::plan::NodeCni::Bridge => "10-bridge.conflist",
    }
}

/// The script the node's mount-namespace holder runs (`sh`, already in the node's network namespace and
/// a private mount namespace). It gives the node its own view of the paths kubelet and containerd 1.6
/// hard-code, then sleeps; containerd and kubelet join it with `nsenter`. Nothing it mounts is seen
/// outside, and every mount goes when the namespace's last process exits.
///
/// With `daemonset`, it also makes the hostPaths of deploy/daemonset.yaml node directories: `/etc` and
/// `/opt` become overlays (the machine has no `/etc/cni` or `/opt/cni`, and must not get them), with
/// `/etc/cni/net.d` bound to `k8s/net.d`, `/opt/cni/bin` to `k8s/cni-bin`, `/var/run/eni` to
/// `k8s/run-eni` and `/var/lib/cni/terway` to the node's state directory, so the lab reads the socket,
/// conflist and state terwayd's pod writes there.
pub fn mount_ns_script(lab_dir: &Path, node: &NodePaths, daemonset: Option<&Path>) -> String {
    let ov = |dir: &str| {
        let what = dir.trim_start_matches('/').replace('/', "-");
        format!(
            "mkdir -p {r}/ov/{what}/upper {r}/ov/{what}/work\n\
             mount -t overlay overlay -o lowerdir={dir},upperdir={r}/ov/{what}/upper,workdir={r}/ov/{what}/work {dir}\n",
            r = node.root.display()
        )
    };
    let bind = |from: &Path, to: &str| {
        format!(
            "mkdir -p {from} {to}\nmount --bind {from} {to}\n",
            from = from.display()
        )
    };
    let mut s = String::from("set -eu\n");
    // /var/lib (kubelet's device-plugins/, libcni's cache) and /var/log (pods/, containers/) become
    // overlays whose writes land in the node's directory.
    s.push_str(&ov("/var/lib"));
    s.push_str(&ov("/var/log"));
    if let Some(state_dir) = daemonset {
        // The DaemonSet's hostPaths must land in this namespace's mounts, never on the machine's
        // disk: refuse a machine where they would (the kubelet would create them there).
        s.push_str(
            "[ \"$(readlink -f /var/run)\" = /run ] || { echo \"terway-lab: /var/run is not a symlink to /run here, so the DaemonSet's /var/run/eni would land on this machine; use up --terwayd process\" >&2; exit 1; }\n\
             [ -d /opt ] || { echo \"terway-lab: this machine has no /opt to overlay for the DaemonSet's /opt/cni/bin; use up --terwayd process\" >&2; exit 1; }\n",
        );
        s.push_str(&ov("/etc"));
        s.push_str(&ov("/opt"));
        s.push_str(&bind(&node.cni_conf_dir(), "/etc/cni/net.d"));
        s.push_str(&bind(&node.at("cni-bin"), "/opt/cni/bin"));
        s.push_str(&bind(state_dir, "/var/lib/cni/terway"));
    }
    // kubelet 1.20 keeps device-plugin sockets in /var/lib/kubelet/device-plugins whatever its root
    // dir: bound to a node directory, terwayd (outside this namespace) serves and registers there.
    s.push_str(&format!(
        "mkdir -p {dp} /var/lib/kubelet/device-plugins
mount --bind {dp} /var/lib/kubelet/device-plugins
",
        dp = node.at("device-plugins").display()
    ));
    // /run/containerd is hard-coded by containerd 1.6 (shim sockets, runc root): a fresh /run, with the
    // lab's directory bound back where it was (the open descriptor keeps the real one reachable).
    s.push_str(&format!(
        "exec 3<{lab}\nmount -t tmpfs -o mode=0755 tmpfs /run\nmkdir -p {lab} /run/containerd\nmount --no-canonicalize --bind /proc/self/fd/3 {lab}\nexec 3<&-\n",
        lab = lab_dir.display()
    ));
    if daemonset.is_some() {
        s.push_str(&bind(&node.at("run-eni"), "/run/eni"));
    }
    for f in GUARDED_SYSCTLS {
        let file = node.at(&format!("sysctl/{}", f.replace('/', ".")));
        s.push_str(&format!(
            "if [ -e /proc/sys/{f} ]; then cat /proc/sys/{f} > {file}; mount --bind {file} /proc/sys/{f}; fi\n",
            file = file.display()
        ));
    }
    s.push_str(&format!(
        "touch {ready}\nexec sleep 2147483647\n",
        ready = node.at("mount-ns.ready").display()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_limits_follow_terways_formulas() {
        // ecs.g7.4xlarge: 8 ENIs of 30 addresses.
        assert_eq!(max_pods(NodeMode::Shared, "ecs.g7.4xlarge"), 7 * 30);
        assert_eq!(max_pods(NodeMode::Exclusive, "ecs.g7.4xlarge"), 7);
        assert_eq!(max_pods(NodeMode::VpcRoute, "ecs.g7.4xlarge"), 110);
        assert_eq!(max_pods(NodeMode::Shared, "ecs.unknown"), 110);
    }

    #[test]
    fn the_mount_script_guards_every_written_sysctl_and_keeps_the_lab_dir() {
        let node = NodePaths::new(Path::new("/run/terway-lab/l1/nodes/node0"));
        let s = mount_ns_script(Path::new("/run/terway-lab/l1"), &node, None);
        for f in GUARDED_SYSCTLS {
            assert!(s.contains(&format!(
                "mount --bind /run/terway-lab/l1/nodes/node0/k8s/sysctl/{} /proc/sys/{f}",
                f.replace('/', ".")
            )));
        }
        assert!(s.contains("mount --no-canonicalize --bind /proc/self/fd/3 /run/terway-lab/l1\n"));
        assert!(s.ends_with("exec sleep 2147483647\n"));
        assert!(!s.contains("/etc"), "{s}");
    }

    #[test]
    fn a_daemonset_node_gets_the_hostpaths_of_deploy_bound_to_its_directory() {
        let node = NodePaths::new(Path::new("/run/terway-lab/l1/nodes/node0"));
        let state = Path::new("/run/terway-lab/l1/nodes/node0/state");
        let s = mount_ns_script(Path::new("/run/terway-lab/l1"), &node, Some(state));
        let ds = include_str!("../../../../deploy/daemonset.yaml");
        for (host_path, bound) in [
            ("/etc/cni/net.d", "/run/terway-lab/l1/nodes/node0/k8s/net.d"),
            ("/opt/cni/bin", "/run/terway-lab/l1/nodes/node0/k8s/cni-bin"),
            (
                "/var/lib/cni/terway",
                "/run/terway-lab/l1/nodes/node0/state",
            ),
            (
                "/var/lib/kubelet/device-plugins",
                "/run/terway-lab/l1/nodes/node0/k8s/device-plugins",
            ),
        ] {
            assert!(
                ds.contains(&format!("path: {host_path},")),
                "{host_path} is not a hostPath of deploy/"
            );
            assert!(
                s.contains(&format!("mount --bind {bound} {host_path}\n")),
                "{s}"
            );
        }
        // /var/run is /run's symlink; /run is replaced by a tmpfs first, so the bind must come after it.
        assert!(ds.contains("path: /var/run/eni,"));
        let tmpfs = s.find("tmpfs /run\n").unwrap_or(usize::MAX);
        let eni = s.find("k8s/run-eni /run/eni\n").unwrap_or(0);
        assert!(tmpfs < eni, "{s}");
        assert!(
            s.contains("lowerdir=/etc,upperdir=/run/terway-lab/l1/nodes/node0/k8s/ov/etc/upper")
        );
    }
}

//! Bringing the lab's Kubernetes up and down. The supervisor (already in the VPC router's namespace)
//! runs the control plane as its children; each node gets a mount-namespace holder in the node's network
//! namespace, then containerd and kubelet joined to it with `nsenter`. Everything started is recorded
//! (PIDs, mount-namespace inodes, cgroup roots) so `down` can finish the job after a crash.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::api::Api;
use super::pki::{self, Identity, Pki};
use super::procs::{self, Children};
use super::{cgroups, node_files, LabPaths, NodePaths, Toolbox};
use crate::plan::{KubePlan, LabPlan, NodePlan};

/// What `down` needs to remove a node's Kubernetes parts after a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeNodeRecord {
    /// PID of the mount-namespace holder (0 once gone).
    pub holder: u32,
    /// Inode of the node's mount namespace: every process in it belongs to the node.
    pub mount_ns: u64,
    /// The node's cgroup root (in every hierarchy).
    pub cgroup_root: String,
    /// The node's primary IP: kubelet's `--node-ip` and serving address.
    #[serde(default)]
    pub node_ip: Option<Ipv4Addr>,
}

/// The Kubernetes part of `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeRecord {
    /// Control-plane and node processes by name (`etcd`, `kube-apiserver`, `node0/kubelet`, …).
    pub processes: BTreeMap<String, u32>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, KubeNodeRecord>,
}

/// A running lab cluster.
pub struct Cluster {
    plan: LabPlan,
    kube: KubePlan,
    tb: Toolbox,
    paths: LabPaths,
    pki: Pki,
    ids: Vec<Identity>,
    children: Children,
    record: KubeRecord,
    terwayd_tar: Option<PathBuf>,
}

fn token_of<'a>(ids: &'a [Identity], user: &str) -> &'a str {
    ids.iter()
        .find(|i| i.user == user)
        .map(|i| i.token.as_str())
        .unwrap_or_default()
}

impl Cluster {
    /// Credentials and files for the lab's cluster (nothing runs yet).
    pub fn prepare(plan: &LabPlan, kube: &KubePlan, tb: Toolbox) -> anyhow::Result<Cluster> {
        let paths = LabPaths::new(&plan.dir);
        std::fs::create_dir_all(&paths.root)?;
        let service_ip = Ipv4Addr::from(u32::from(plan.service_cidr.network()) + 1);
        let pki = Pki::generate(&paths.pki(), kube.api_addr, service_ip)
            .context("make the lab's certificates")?;
        let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
        let ids = pki::identities(&names);
        std::fs::write(pki.tokens(), pki::token_file(&ids))?;
        let server = kube.api_url();
        for (file, user) in [
            (paths.admin_kubeconfig(), "terway-lab-admin"),
            (
                paths.root.join("controller-manager.kubeconfig"),
                "system:kube-controller-manager",
            ),
            (
                paths.root.join("scheduler.kubeconfig"),
                "system:kube-scheduler",
            ),
        ] {
            std::fs::write(
                &file,
                pki::kubeconfig(&server, &pki.ca(), user, token_of(&ids, user)),
            )?;
        }
        // terwayd is the `terway` ServiceAccount, granted what it does by deploy/rbac.yaml (the node
        // identity may not write events.k8s.io events or Terway's CRs). A DaemonSet's pods get the
        // account's real token; processes get a static token of the same name.
        let user = super::install::TERWAYD_USER;
        if !kube.daemonset() {
            for node in &plan.nodes {
                let np = NodePaths::new(&node.dir);
                std::fs::create_dir_all(&np.root)?;
                std::fs::write(
                    np.at("terwayd.kubeconfig"),
                    pki::kubeconfig(&server, &pki.ca(), user, token_of(&ids, user)),
                )?;
            }
        }
        // One CNI directory for every node: our plugin, and the reference plugins for `bench k8s`.
        let bin = paths.cni_bin();
        std::fs::create_dir_all(&bin)?;
        let terway = crate::procs::find_binary("terway")?;
        std::os::unix::fs::symlink(&terway, bin.join("terway"))
            .with_context(|| format!("link {} into {}", terway.display(), bin.display()))?;
        for p in ["loopback", "bridge", "host-local", "portmap", "bandwidth"] {
            let src = PathBuf::from("/usr/lib/cni").join(p);
            if src.exists() {
                std::os::unix::fs::symlink(&src, bin.join(p))?;
            }
        }
        if !bin.join("loopback").exists() {
            anyhow::bail!("/usr/lib/cni/loopback is missing (containerd's CRI needs it): apt-get install containernetworking-plugins");
        }
        Ok(Cluster {
            plan: plan.clone(),
            kube: kube.clone(),
            tb,
            paths,
            pki,
            ids,
            children: Children::default(),
            record: KubeRecord::default(),
            terwayd_tar: None,
        })
    }

    /// What `down` needs, as of now.
    pub fn record(&mut self) -> KubeRecord {
        let mut r = self.record.clone();
        r.processes = self.children.pids();
        r
    }

    /// A client of the API server with the administrator's token (from inside the VPC).
    pub fn api(&self) -> anyhow::Result<Api> {
        Api::new(
            &self.kube.api_url(),
            &self.pki.ca(),
            token_of(&self.ids, "terway-lab-admin"),
        )
    }

    /// A log's path and last lines, for error messages (the lab directory is gone after a failed `up`).
    fn see(&self, component: &str) -> String {
        let path = self.log_of(component);
        format!(
            "{}, which ends:\n{}",
            path.display(),
            crate::daemons::tail_of(&path)
        )
    }

    /// The log file of the process called `name` (`node0/kubelet` → `node0-kubelet.log`).
    fn log_of(&self, name: &str) -> PathBuf {
        self.paths.log(&name.replace('/', "-"))
    }

    fn spawn(&mut self, name: &str, cmd: Command) -> anyhow::Result<u32> {
        let log = self.log_of(name);
        self.children.spawn(name, cmd, &log)
    }

    /// etcd, kube-apiserver (until ready), kube-controller-manager and kube-scheduler.
    pub async fn start_control_plane(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.paths.etcd())?;
        let mut etcd = Command::new("etcd");
        etcd.args(["--name", "lab", "--data-dir"])
            .arg(self.paths.etcd())
            .args([
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=lab=http://127.0.0.1:2380",
                "--listen-metrics-urls=",
            ]);
        self.spawn("etcd", etcd)?;

        let p = self.pki.clone();
        let mut api = Command::new(self.tb.server("kube-apiserver"));
        let addr = self.kube.api_addr;
        api.arg("--etcd-servers=http://127.0.0.1:2379")
            .arg(format!("--bind-address={addr}"))
            .arg(format!("--advertise-address={addr}"))
            .arg(format!("--secure-port={}", crate::plan::K8S_API_PORT))
            .arg("--insecure-port=0")
            .arg(format!("--tls-cert-file={}", p.cert("apiserver").display()))
            .arg(format!(
                "--tls-private-key-file={}",
                p.key("apiserver").display()
            ))
            .arg(format!("--client-ca-file={}", p.ca().display()))
            .arg(format!("--token-auth-file={}", p.tokens().display()))
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-admission-plugins=NodeRestriction")
            .arg(format!(
                "--service-account-key-file={}",
                p.dir.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p.key("sa").display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!(
                "--service-cluster-ip-range={}",
                self.plan.service_cidr
            ))
            .arg(format!(
                "--kubelet-client-certificate={}",
                p.cert("apiserver-kubelet-client").display()
            ))
            .arg(format!(
                "--kubelet-client-key={}",
                p.key("apiserver-kubelet-client").display()
            ))
            // Otherwise kubectl logs/exec resolve node names through DNS.
            .arg("--kubelet-preferred-address-types=InternalIP,Hostname")
            // A single API server on a VPC address: the endpoint reconciler only logs loopback errors.
            .arg("--endpoint-reconciler-type=none")
            // No kube-proxy beside the API server: it reaches webhook Services by their endpoints.
            .arg("--enable-aggregator-routing=true")
            .arg("--allow-privileged=true")
            .arg("--profiling=false");
        self.spawn("kube-apiserver", api)?;
        let client = self.api()?;
        let deadline = Instant::now() + Duration::from_secs(90);
        while !client.ready().await {
            if self.children.pid("kube-apiserver").is_none() || self.children.pid("etcd").is_none()
            {
                anyhow::bail!(
                    "the control plane exited during start-up; see {}\nand {}",
                    self.see("kube-apiserver"),
                    self.see("etcd")
                );
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "kube-apiserver was not ready within 90 s; see {}",
                    self.see("kube-apiserver")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let mut cm = Command::new(self.tb.server("kube-controller-manager"));
        cm.arg(format!(
            "--kubeconfig={}",
            self.paths
                .root
                .join("controller-manager.kubeconfig")
                .display()
        ))
        .arg("--leader-elect=false")
        // No cloud, no kube-proxy: node IPAM, routes and services are not the lab's business. Node
        // lifecycle stays on, so a dead kubelet's node goes NotReady.
        .arg("--controllers=*,-nodeipam,-cloud-node-lifecycle,-service,-route")
        .arg("--use-service-account-credentials=true")
        .arg(format!(
            "--service-account-private-key-file={}",
            p.key("sa").display()
        ))
        .arg(format!("--root-ca-file={}", p.ca().display()))
        .arg("--bind-address=127.0.0.1")
        .arg("--port=0");
        self.spawn("kube-controller-manager", cm)?;
        let mut sched = Command::new(self.tb.server("kube-scheduler"));
        sched
            .arg(format!(
                "--kubeconfig={}",
                self.paths.root.join("scheduler.kubeconfig").display()
            ))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg("--port=0");
        self.spawn("kube-scheduler", sched)?;
        Ok(())
    }

    fn node_plan(&self, name: &str) -> anyhow::Result<NodePlan> {
        self.plan
            .node(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no node {name:?} in lab {}", self.plan.name))
    }

    /// Everything a node runs from: directories, cgroup root, configs, the mount-namespace script.
    fn write_node_files(
        &self,
        node: &NodePlan,
        node_ip: Ipv4Addr,
    ) -> anyhow::Result<KubeNodeRecord> {
        let np = NodePaths::new(&node.dir);
        for d in [
            "containerd/root",
            "containerd/state",
            "containerd/opt",
            "kubelet",
            "certs",
            "sysctl",
            "host-local",
        ] {
            std::fs::create_dir_all(np.at(d))?;
        }
        std::fs::create_dir_all(np.cni_conf_dir())?;
        let daemonset = self.kube.daemonset();
        if daemonset {
            // What a node image brings (containernetworking-plugins: containerd's CRI needs
            // `loopback`), linked to the lab's CNI directory; the DaemonSet's init step adds `terway`.
            // The mount script makes the other directories it binds.
            let bin = np.at("cni-bin");
            std::fs::create_dir_all(&bin)?;
            for p in ["loopback", "bandwidth", "portmap"] {
                let (src, dest) = (self.paths.cni_bin().join(p), bin.join(p));
                if src.exists() && dest.symlink_metadata().is_err() {
                    std::os::unix::fs::symlink(&src, &dest)
                        .with_context(|| format!("link {} to {}", dest.display(), src.display()))?;
                }
            }
        }
        let cgroup_root = cgroups::root_name(&self.plan.name, &node.name);
        cgroups::create(&cgroup_root)?;
        std::fs::write(
            np.at("containerd.toml"),
            node_files::containerd_toml(&self.paths, &np, daemonset),
        )?;
        std::fs::write(
            np.at("kubelet.yaml"),
            node_files::kubelet_yaml(node, node_ip, &self.pki.ca(), &cgroup_root),
        )?;
        let user = format!("system:node:{}", node.name);
        std::fs::write(
            np.at("kubelet.kubeconfig"),
            pki::kubeconfig(
                &self.kube.api_url(),
                &self.pki.ca(),
                &user,
                token_of(&self.ids, &user),
            ),
        )?;
        let index = self
            .plan
            .nodes
            .iter()
            .position(|n| n.name == node.name)
            .unwrap_or(0);
        // The DaemonSet's init step installs the conflist (until then the node is NotReady, as a
        // fresh node of a real cluster is until its CNI arrives).
        if !daemonset {
            crate::state::write_json_atomic(
                &np.cni_conf_dir()
                    .join(node_files::conflist_name(self.kube.cni)),
                &node_files::conflist(
                    node,
                    self.kube.cni,
                    node_files::bridge_subnet(&self.plan, index),
                ),
            )?;
        }
        std::fs::write(
            np.at("mount-ns.sh"),
            node_files::mount_ns_script(
                &self.plan.dir,
                &np,
                daemonset.then_some(node.state_dir.as_path()),
            ),
        )?;
        Ok(KubeNodeRecord {
            cgroup_root,
            node_ip: Some(node_ip),
            ..Default::default()
        })
    }

    /// Start node `name` (primary IP `node_ip`): mount namespace, containerd, images, kubelet.
    pub fn start_node(&mut self, name: &str, node_ip: Ipv4Addr) -> anyhow::Result<()> {
        let node = self.node_plan(name)?;
        let np = NodePaths::new(&node.dir);
        let mut rec = self.write_node_files(&node, node_ip)?;
        let _ = std::fs::remove_file(np.at("mount-ns.ready"));
        let mut holder = Command::new("nsenter");
        holder
            .arg(format!("--net=/run/netns/{}", node.netns))
            .args([
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
            ])
            .arg(np.at("mount-ns.sh"));
        rec.holder = self.spawn(&format!("{name}/mount-ns"), holder)?;
        self.record.nodes.insert(name.to_string(), rec.clone());
        let deadline = Instant::now() + Duration::from_secs(15);
        while !np.at("mount-ns.ready").exists() {
            if self.children.pid(&format!("{name}/mount-ns")).is_none()
                || Instant::now() >= deadline
            {
                anyhow::bail!(
                    "the mount namespace of {name} was not ready; see {}",
                    self.see(&format!("{name}/mount-ns"))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        rec.mount_ns = procs::mount_ns_inode(rec.holder).unwrap_or(0);
        self.record.nodes.insert(name.to_string(), rec);
        self.start_runtime(name)
    }

    /// The terwayd image tar, built once per lab (every node imports the same one).
    fn terwayd_image(&mut self) -> anyhow::Result<PathBuf> {
        if let Some(tar) = &self.terwayd_tar {
            return Ok(tar.clone());
        }
        let dir = self.paths.root.join("image");
        std::fs::create_dir_all(&dir)?;
        let tar = super::image::build(&dir).context("build the terwayd image")?;
        self.terwayd_tar = Some(tar.clone());
        Ok(tar)
    }

    fn in_node(&self, name: &str, program: &std::path::Path) -> anyhow::Result<Command> {
        let holder = self
            .record
            .nodes
            .get(name)
            .map(|r| r.holder)
            .filter(|p| *p != 0)
            .ok_or_else(|| anyhow::anyhow!("node {name} has no mount namespace"))?;
        let mut c = Command::new("nsenter");
        c.args(["-t", &holder.to_string(), "-m", "-n", "--"])
            .arg(program);
        Ok(c)
    }

    /// containerd (until its socket answers, images imported) and kubelet, in the node's namespaces.
    pub fn start_runtime(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self.node_plan(name)?;
        let np = NodePaths::new(&node.dir);
        let node_ip = self
            .record
            .nodes
            .get(name)
            .and_then(|r| r.node_ip)
            .ok_or_else(|| anyhow::anyhow!("node {name} is not prepared (no node IP recorded)"))?;
        let mut containerd = self.in_node(name, std::path::Path::new("containerd"))?;
        containerd.arg("--config").arg(np.at("containerd.toml"));
        self.spawn(&format!("{name}/containerd"), containerd)?;
        let sock = np.containerd_socket();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if self.children.pid(&format!("{name}/containerd")).is_none()
                || Instant::now() >= deadline
            {
                anyhow::bail!(
                    "containerd of {name} did not open {}; see {}",
                    sock.display(),
                    self.see(&format!("{name}/containerd"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut images = vec![
            self.tb.images.join("pause.tar"),
            self.tb.images.join("workload.tar"),
        ];
        if self.kube.daemonset() {
            images.push(self.terwayd_image()?);
        }
        for image in images {
            let out = Command::new("ctr")
                .arg("--address")
                .arg(&sock)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(&image)
                .output()
                .context("run ctr")?;
            if !out.status.success() {
                anyhow::bail!(
                    "importing {} into {name}'s containerd failed: {}",
                    image.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let kubelet_bin = self.tb.server("kubelet");
        let mut kubelet = self.in_node(name, &kubelet_bin)?;
        kubelet
            .arg(format!("--config={}", np.at("kubelet.yaml").display()))
            .arg(format!(
                "--kubeconfig={}",
                np.at("kubelet.kubeconfig").display()
            ))
            .arg(format!("--root-dir={}", np.at("kubelet").display()))
            .arg(format!("--cert-dir={}", np.at("certs").display()))
            .arg(format!("--hostname-override={name}"))
            .arg(format!("--node-ip={node_ip}"))
            .arg("--container-runtime=remote")
            .arg(format!(
                "--container-runtime-endpoint=unix://{}",
                sock.display()
            ))
            .arg(format!(
                "--pod-infra-container-image={}",
                super::PAUSE_IMAGE
            ))
            // The labels a cloud's node controller sets (instance type, zone), and the lab's mode.
            .arg(format!(
                "--node-labels=terway-lab/mode={},node.kubernetes.io/instance-type={},topology.kubernetes.io/zone={}",
                node.mode.as_str(),
                node.instance_type,
                self.plan
                    .vswitches
                    .iter()
                    .find(|v| v.id == node.vswitch_id)
                    .map(|v| v.zone_id.as_str())
                    .unwrap_or_default()
            ))
            .arg("--v=1");
        self.spawn(&format!("{name}/kubelet"), kubelet)?;
        Ok(())
    }

    /// Stop a node's kubelet and containerd (SIGKILL when `crash`), leaving its pods and shims running.
    pub fn stop_runtime(&mut self, name: &str, crash: bool) {
        let grace = Duration::from_secs(10);
        self.children.stop(&format!("{name}/kubelet"), crash, grace);
        self.children
            .stop(&format!("{name}/containerd"), crash, grace);
    }

    /// Stop everything: each node (kubelet, pods, containerd, shims, holder, cgroups), then the control
    /// plane. Returns problems met (teardown goes on regardless).
    pub fn shutdown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        let names: Vec<String> = self.record.nodes.keys().cloned().collect();
        for name in names {
            self.children
                .stop(&format!("{name}/kubelet"), false, Duration::from_secs(5));
            if let Some(rec) = self.record.nodes.get(&name).cloned() {
                errors.extend(remove_node(&rec, &self.plan.dir.display().to_string()));
            }
            self.children
                .stop_prefix(&format!("{name}/"), Duration::from_secs(5));
        }
        for c in [
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver",
            "etcd",
        ] {
            self.children.stop(c, false, Duration::from_secs(10));
        }
        errors
    }
}

/// Remove what a node left: its pods' processes (by cgroup), every process of its mount namespace whose
/// command line names the lab directory (containerd, shims, the holder; a namespace inode can be reused
/// once the namespace is gone), then its cgroups. Used by the supervisor and by a crashed lab's `down`.
pub fn remove_node(rec: &KubeNodeRecord, lab_dir: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for _ in 0..3 {
        let mut pids = cgroups::processes(&rec.cgroup_root);
        if rec.mount_ns != 0 {
            pids.extend(
                procs::processes_in_mount_ns(rec.mount_ns)
                    .into_iter()
                    .filter(|p| crate::procs::is_ours(*p, &[lab_dir])),
            );
        }
        if pids.is_empty() {
            break;
        }
        let left = procs::kill_all(&pids, Duration::from_secs(5));
        if !left.is_empty() {
            errors.push(format!("processes {left:?} did not exit"));
        }
    }
    errors.extend(cgroups::remove(&rec.cgroup_root, Duration::from_secs(10)));
    errors
}

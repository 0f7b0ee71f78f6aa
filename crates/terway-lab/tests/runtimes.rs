//! Container runtimes that are not Kubernetes, driving the node's unmodified `terway` (the node's
//! `10-terway.conflist`, its terwayd) from inside a lab node (`terway-lab node-exec`: the node's network and
//! mount namespaces, so `/etc/cni/net.d`, `/opt/cni/bin`, `/var/lib/cni` and `/run` are the node's):
//! `ctr run --cni`, which sends no CNI_ARGS, and podman 4.3 with its CNI backend, which sends only
//! `K8S_POD_NAME=<container name>` and, on `podman network reload`, `IP=` of the address it had. Both used to
//! get code 4 ("terway networks Kubernetes pods only").

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{eventually, http_from_outside, lab_bin, node_sh, Lab};
use serde_json::Value;

/// `sh -c script` inside node0, which must succeed; its stdout.
fn node_ok(lab: &Lab, script: &str) -> String {
    let (ok, out, err) = node_sh(lab, script);
    assert!(ok, "in node0: {script}\n{err}{out}");
    out
}

/// The addresses terwayd holds for `key` (`_runtime/<container id>`), asked with the real terway-cli.
fn held(lab: &Lab, key: &str) -> Vec<String> {
    let cli = lab_bin().with_file_name("terway-cli");
    let (_, out, _) = node_sh(
        lab,
        &format!(
            "{} --socket /run/eni/eni.socket --json pod {key}",
            cli.display()
        ),
    );
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ipv4"].as_str().map(String::from))
        .collect()
}

/// node0's cgroup root (what its kubelet runs under): other runtimes' containers go beneath it, so the
/// lab's `down` removes their cgroups with the node's.
fn cgroup_root(lab: &Lab) -> String {
    let dir = lab.desc["dir"].as_str().expect("lab dir");
    let st: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(dir).join("state.json")).expect("state.json"),
    )
    .expect("state.json is JSON");
    st["kube"]["nodes"]["node0"]["cgroup_root"]
        .as_str()
        .expect("node0 cgroup root")
        .to_string()
}

/// node0's directory (scratch space of its own, removed by `down`).
fn node_dir(lab: &Lab) -> PathBuf {
    let conf = lab.desc["nodes"][0]["cni_config"]
        .as_str()
        .expect("node0 cni_config");
    Path::new(conf).parent().expect("node dir").to_path_buf()
}

/// The workload image copied from the node's Kubernetes image store into `tar` (readable by ctr and podman).
fn export_workload(lab: &Lab, tar: &Path) {
    node_ok(
        lab,
        &format!(
            "ctr -n k8s.io images export {} terway-lab.local/workload:1",
            tar.display()
        ),
    );
}

/// A foreground `ctr run --rm --cni` that the test ends; killed if the test fails first.
struct CtrRun(Child);

impl Drop for CtrRun {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ctr_run_with_cni_gets_a_vpc_address_and_gives_it_back_when_the_container_ends() {
    let lab = Lab::up(&["--k8s", "--node", "shared"]);
    let ns = format!("t{}", lab.name);
    let tar = node_dir(&lab).join("workload.tar");
    export_workload(&lab, &tar);
    node_ok(
        &lab,
        &format!("ctr -n {ns} images import {}", tar.display()),
    );
    let cgroup = format!("{}/ctr-web", cgroup_root(&lab));
    // As a user would: in the foreground, `--rm`, so ctr itself runs CNI DEL when the task ends.
    let ctr = CtrRun(
        Command::new(lab_bin())
            .args(["node-exec", "--lab", &lab.name, "node0", "--"])
            .args([
                "ctr", "-n", &ns, "run", "--rm", "--cni", "--cgroup", &cgroup,
            ])
            .args(["terway-lab.local/workload:1", "ctr-web"])
            .args(["sh", "-c", "httpd -p 80 -h /tmp; exec sleep 600"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ctr"),
    );
    // ctr names the CNI container `<namespace>-<id>`; no CNI_ARGS at all.
    let key = format!("_runtime/{ns}-ctr-web");
    let mut ips = Vec::new();
    let got = eventually(60, || {
        ips = held(&lab, &key);
        !ips.is_empty()
    });
    assert!(
        got,
        "terwayd never held an address for {key}: {}",
        node_sh(&lab, &format!("ctr -n {ns} tasks ls")).1
    );
    let ip = ips[0].clone();
    assert!(
        eventually(30, || http_from_outside(&lab, &format!("http://{ip}/"))
            .is_ok()),
        "the ctr container at {ip} does not answer the VPC"
    );
    node_ok(&lab, &format!("ctr -n {ns} tasks kill -s KILL ctr-web"));
    let mut ctr = ctr;
    let status = ctr.0.wait().expect("wait for ctr");
    let mut err = String::new();
    if let Some(mut e) = ctr.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        eventually(20, || held(&lab, &key).is_empty()),
        "terwayd still holds {ip} for {key} after ctr ended the container (ctr: {status:?} {err})"
    );
    let left = node_ok(&lab, &format!("ctr -n {ns} containers ls -q"));
    assert!(left.trim().is_empty(), "ctr left {left}");
}

#[test]
fn podman_containers_get_addresses_keep_them_across_network_reload_and_give_them_back() {
    let lab = Lab::up(&["--k8s", "--node", "shared"]);
    let dir = node_dir(&lab).join("podman");
    let net = dir.join("net.d");
    std::fs::create_dir_all(&net).expect("podman dirs");
    std::fs::create_dir_all(dir.join("tmp")).expect("podman tmp");
    // podman reads its networks from its own directory: the node's terway conflist, unchanged.
    let conflist = node_dir(&lab).join("k8s/net.d/10-terway.conflist");
    std::fs::copy(&conflist, net.join("10-terway.conflist")).expect("copy the node's conflist");
    let conf = dir.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"/opt/cni/bin\"]\nnetwork_config_dir = \"{}\"\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n\
             image_copy_tmp_dir = \"{}\"\n",
            net.display(),
            dir.join("tmp").display()
        ),
    )
    .expect("containers.conf");
    // Every podman command of one container in the same mount namespace (the node's), with its storage in
    // the node's directory; vfs because the node's /var/lib is an overlay.
    let podman = format!(
        "CONTAINERS_CONF={conf} TMPDIR={tmp} podman --root {root} --runroot {run} --storage-driver vfs",
        conf = conf.display(),
        tmp = dir.join("tmp").display(),
        root = dir.join("root").display(),
        run = dir.join("run").display(),
    );
    let tar = dir.join("workload.tar");
    export_workload(&lab, &tar);
    node_ok(&lab, &format!("{podman} load -q -i {}", tar.display()));
    let id = node_ok(
        &lab,
        &format!(
            "{podman} run -d --name pm-web --network terway --cgroup-parent {cg}/podman \
             --ulimit nproc=32768:32768 --ulimit nofile=20000:20000 --entrypoint /bin/sh \
             terway-lab.local/workload:1 -c 'httpd -p 80 -h /tmp; exec sleep 600'",
            cg = cgroup_root(&lab)
        ),
    )
    .trim()
    .to_string();
    assert_eq!(id.len(), 64, "podman run printed {id:?}");
    let key = format!("_runtime/{id}");
    let ip_of = || {
        node_ok(
            &lab,
            &format!("{podman} inspect pm-web --format '{{{{.NetworkSettings.Networks.terway.IPAddress}}}}'"),
        )
        .trim()
        .to_string()
    };
    let ip = ip_of();
    assert_eq!(
        held(&lab, &key),
        vec![ip.clone()],
        "terwayd's record of {key}"
    );
    assert!(
        eventually(30, || http_from_outside(&lab, &format!("http://{ip}/"))
            .is_ok()),
        "the podman container at {ip} does not answer the VPC"
    );

    // DEL and ADD with IP=<its address>, within the lab's 2 s reuse cooldown: the address comes back.
    node_ok(&lab, &format!("{podman} network reload pm-web"));
    assert_eq!(ip_of(), ip, "podman network reload changed the address");
    assert_eq!(held(&lab, &key), vec![ip.clone()]);
    assert!(
        eventually(30, || http_from_outside(&lab, &format!("http://{ip}/"))
            .is_ok()),
        "the podman container at {ip} does not answer after network reload"
    );

    node_ok(&lab, &format!("{podman} rm -f -t 0 pm-web"));
    assert!(
        eventually(20, || held(&lab, &key).is_empty()),
        "terwayd still holds {ip} for {key} after podman rm"
    );
}

//! The floors under any CNI plugin on this machine: exec of a trivial binary, and creating / deleting one
//! veth pair with its peer in a pod namespace over netlink (terway-datapath primitives), each in a
//! namespace this benchmark creates and removes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use terway_datapath::{link, Netlink, Netns};

use super::exec::exec_floor;
use super::stats::Summary;

/// Measure the floors `n` times each.
pub fn measure(n: usize) -> Value {
    let exec = exec_floor(std::path::Path::new("/bin/true"), n);
    let veth = veth_floor(n);
    let (create, delete, veth_err) = match veth {
        Ok((c, d)) => (Summary::of(&c), Summary::of(&d), None),
        Err(e) => (None, None, Some(format!("{e:#}"))),
    };
    json!({
        "samples": n,
        "exec_true": exec.as_ref().ok().and_then(|v| Summary::of(v)),
        "exec_error": exec.err().map(|e| format!("{e:#}")),
        "veth_create": create,
        "veth_delete": delete,
        "veth_error": veth_err,
    })
}

/// Create `n` veth pairs host↔pod (peer named eth0 in its own pod namespace), then delete them; the
/// namespaces are made and removed outside the timed region.
pub fn veth_floor(n: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let host_name = format!("bn{id}-fh");
    let host = Netns::create_named(&host_name)?;
    let pods: Vec<String> = (0..n).map(|i| format!("bn{id}-fp{i}")).collect();
    let result = (|| -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let pod_ns = pods
            .iter()
            .map(|p| Netns::create_named(p))
            .collect::<Result<Vec<_>, _>>()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let nl = Netlink::open(&host)?;
            let mut create = Vec::with_capacity(n);
            let mut idx = Vec::with_capacity(n);
            for (i, ns) in pod_ns.iter().enumerate() {
                let t = Instant::now();
                let l = link::create_veth(&nl, &format!("bnf{i}"), "eth0", Some(ns), None, None)
                    .await?;
                create.push(t.elapsed());
                idx.push(l.index);
            }
            let mut delete = Vec::with_capacity(n);
            for i in idx {
                let t = Instant::now();
                link::remove_link(&nl, i).await?;
                delete.push(t.elapsed());
            }
            Ok((create, delete))
        })
    })();
    for p in &pods {
        let _ = Netns::delete_named(p);
    }
    let _ = Netns::delete_named(&host_name);
    result
}

//! Pod identity at the plugin's edge: names Kubernetes would refuse are refused with code 4 before the
//! daemon is asked for anything.

mod support;

use serde_json::json;
use support::*;
use terway_datapath::testbed::Testbed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_names_kubernetes_would_refuse_get_code_4_and_allocate_nothing() {
    let tb = Testbed::new(47).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let d = serve(&sock, shared_state(&tb, &["10.47.0.5"]));
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (_, ns_path) = tb.pod_ns("a").unwrap();
    let netns = ns_path.display().to_string();
    let long = format!("default/{}", "p".repeat(300));
    for pod in [
        "a/b/c",
        "../..",
        "default/Web",
        "default/x\ny",
        long.as_str(),
    ] {
        for cmd in ["ADD", "CHECK"] {
            let r = cni(cmd, "c1", &netns, pod, &conf).await;
            assert_ne!(r.code, 0, "{cmd} {pod:?}");
            assert_eq!(
                r.json()["code"],
                4,
                "{cmd} {pod:?}: {} {}",
                r.stdout,
                r.stderr
            );
            assert!(
                r.json()["msg"].as_str().unwrap_or("").contains("not valid"),
                "{}",
                r.stdout
            );
        }
        // DEL must not fail forever for something that can never have been ours.
        assert_eq!(cni("DEL", "c1", &netns, pod, &conf).await.code, 0);
    }
    assert!(
        d.0.lock().unwrap().allocs.is_empty(),
        "nothing was allocated"
    );
    assert!(cali_links(&tb).await.is_empty());
}

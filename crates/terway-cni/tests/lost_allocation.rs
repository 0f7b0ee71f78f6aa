//! DEL after terwayd lost the allocation (GC released it, its state was lost): the runtime's cached
//! result (`prevResult`) names the pod's addresses, so their policy rules go too — but never the rules of
//! another pod that holds the address by now.

mod support;

use serde_json::json;
use support::*;
use terway_datapath::testbed::Testbed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_without_a_daemon_record_removes_the_rules_named_by_prev_result() {
    let tb = Testbed::new(48).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let d = serve(&sock, shared_state(&tb, &["10.48.0.5", "10.48.0.6"]));
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (_, ns_a) = tb.pod_ns("a").unwrap();
    let (_, ns_b) = tb.pod_ns("b").unwrap();
    let (ns_a, ns_b) = (ns_a.display().to_string(), ns_b.display().to_string());

    let add = cni("ADD", "c1", &ns_a, "default/lost", &conf).await;
    assert_eq!(add.code, 0, "{}", add.stdout);
    assert_eq!(our_rules(&tb).await.len(), 2);
    // terwayd forgets the pod.
    d.0.lock().unwrap().allocs.clear();
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = add.json();
    let del = cni("DEL", "c1", &ns_a, "default/lost", &with_prev).await;
    assert_eq!(del.code, 0, "{} {}", del.stdout, del.stderr);
    assert!(
        our_rules(&tb).await.is_empty(),
        "rules of 10.48.0.5 left behind: {:?}",
        our_rules(&tb).await
    );

    // Another pod holds 10.48.0.6 now; a late DEL of a forgotten pod whose cached result names the same
    // address must leave that pod's rules alone.
    let add_b = cni("ADD", "c2", &ns_b, "default/owner", &conf).await;
    assert_eq!(add_b.code, 0, "{}", add_b.stdout);
    let before = our_rules(&tb).await;
    assert_eq!(before.len(), 2);
    let mut ghost = conf.clone();
    ghost["prevResult"] = add_b.json();
    let del = cni("DEL", "c9", "", "default/ghost", &ghost).await;
    assert_eq!(del.code, 0, "{}", del.stdout);
    assert_eq!(
        our_rules(&tb).await,
        before,
        "the owner's rules were touched"
    );
    assert_eq!(
        cni("DEL", "c2", &ns_b, "default/owner", &conf).await.code,
        0
    );
    assert!(our_rules(&tb).await.is_empty());
}

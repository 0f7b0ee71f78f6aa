//! The client under pressure: server throttling absorbed by backoff, errors after commit deduplicated
//! by ClientToken, paging over more than one page of ENIs, and a 20 % fault rate on every action with
//! every logical operation still succeeding and no duplicate ENI.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use terway_cloud::backoff;
use terway_cloud::wait::{wait_eni_deleted, wait_eni_status};
use terway_cloud::{Cloud, EniFilter, EniStatus, ENI_IDS_PER_REQUEST, ENI_PAGE_SIZE};
use terway_emulator::FaultConfig;

fn tag_filter(tag: &str) -> EniFilter {
    EniFilter {
        tags: BTreeMap::from([("test".to_string(), tag.to_string())]),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_throttling_is_absorbed_by_backoff() {
    // The server allows 60 DescribeVSwitches a minute (burst 60, then 1/s); the client's own limiter
    // is opened wide so the server is what throttles.
    let env = start_with(
        |c| {
            c.rate_limits.insert("DescribeVSwitches".into(), 60);
        },
        |c| {
            c.rate_limit.insert("DescribeVSwitches".into(), 100_000);
            c.backoff_override
                .insert(backoff::DEFAULT.into(), quick(300, 12).into());
        },
    );
    let cloud = &env.cloud;
    for i in 0..64 {
        let v = cloud.describe_vswitches(&[VSW.to_string()]).await;
        assert!(v.is_ok(), "call {i} surfaced {v:?}");
    }
    let calls: Vec<_> = env
        .emu
        .calls()
        .into_iter()
        .filter(|c| c.action == "DescribeVSwitches")
        .collect();
    let throttled = calls.iter().filter(|c| c.code == "Throttling.User").count();
    assert!(
        throttled >= 1,
        "the server never throttled; the test proves nothing"
    );
    let m = &cloud.metrics()["DescribeVSwitches"];
    assert_eq!((m.calls, m.failed_calls), (64, 0));
    assert_eq!(
        m.errors.get("Throttling.User").copied().unwrap_or(0),
        throttled as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rate_limiter_keeps_under_the_server_quota() {
    // The client allows 60 a minute (burst 60), the server 70: a burst of 63 concurrent calls makes
    // the client hold 3 back for ~1, 2 and 3 s instead of being throttled. Concurrency makes the
    // waits independent of how fast the machine answers.
    let env = start_with(
        |c| {
            c.rate_limits.insert("DescribeVSwitches".into(), 70);
        },
        |c| {
            c.rate_limit.insert("DescribeVSwitches".into(), 60);
        },
    );
    let cloud = Arc::new(env.cloud.clone());
    let tasks: Vec<_> = (0..63)
        .map(|_| {
            let cloud = cloud.clone();
            tokio::spawn(async move { cloud.describe_vswitches(&[VSW.to_string()]).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let throttled = env
        .emu
        .calls()
        .iter()
        .filter(|c| c.code.starts_with("Throttling"))
        .count();
    assert_eq!(throttled, 0);
    let m = &env.cloud.metrics()["DescribeVSwitches"];
    assert!(
        m.rate_limit_wait_ms_total > 4_000.0,
        "the client limiter did not hold calls back: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_token_makes_retries_after_commit_idempotent() {
    // Half of the attempts fail after commit, so the usual 8 steps would exhaust the retries of one
    // of the 12 creates in about one run in twenty; 40 steps make that about one in 10^11.
    let env = start_with(
        |_| {},
        |c| {
            for key in [backoff::ENI_CREATE, backoff::ENI_IP_OPS] {
                c.backoff_override.insert(key.into(), quick(20, 40).into());
            }
        },
    );
    let mut faults = FaultConfig::default();
    for a in ["CreateNetworkInterface", "AssignPrivateIpAddresses"] {
        faults.error_after_commit_rate.insert(a.into(), 0.5);
    }
    env.emu.set_faults(faults);
    let cloud = &env.cloud;
    let tag = suffix();
    let mut ids = BTreeSet::new();
    for _ in 0..12 {
        let e = cloud
            .create_network_interface(&eni_request(&tag, 1))
            .await
            .unwrap();
        ids.insert(e.id);
    }
    assert_eq!(ids.len(), 12);
    let in_cloud: Vec<_> = env
        .emu
        .state()
        .enis
        .into_values()
        .filter(|e| e.tags.get("test") == Some(&tag))
        .collect();
    assert_eq!(
        in_cloud.len(),
        12,
        "an error after commit must not create a second ENI"
    );

    let creates: Vec<_> = env
        .emu
        .calls()
        .into_iter()
        .filter(|c| c.action == "CreateNetworkInterface")
        .collect();
    assert!(
        creates.len() > 12,
        "no fault fired; the test proves nothing"
    );
    // The emulator remembers each ClientToken it executed: one per logical create means every retry
    // re-sent the token of its first attempt.
    let tokens = env
        .emu
        .state()
        .tokens
        .keys()
        .filter(|k| k.starts_with("CreateNetworkInterface/"))
        .count();
    assert_eq!(
        tokens, 12,
        "one ClientToken per logical create, re-used by its retries"
    );

    // Assign: the retried request gets the original answer, not a second batch of addresses.
    let eni = ids.iter().next().unwrap().clone();
    cloud
        .attach_network_interface(&eni, INSTANCE, None)
        .await
        .unwrap();
    wait_eni_status(
        cloud,
        &eni,
        EniStatus::InUse,
        cloud.backoff(backoff::WAIT_ENI_STATUS),
    )
    .await
    .unwrap();
    let mut assigned = 0;
    for _ in 0..6 {
        assigned += cloud.assign_private_ips(&eni, 2).await.unwrap().len();
    }
    let now = cloud
        .describe_network_interface(&eni)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        now.private_ips.len(),
        2 + assigned,
        "retried assigns must not leak addresses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_over_more_than_one_page() {
    let env = start_with(
        |c| c.throttling = false,
        |c| {
            c.rate_limit
                .insert("CreateNetworkInterface".into(), 100_000);
        },
    );
    let cloud = Arc::new(env.cloud.clone());
    let tag = suffix();
    let total = ENI_PAGE_SIZE + 23;
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (cloud, tag) = (cloud.clone(), tag.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for _ in (w..total).step_by(workers) {
                cloud
                    .create_network_interface(&eni_request(&tag, 0))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut created = 0;
    for t in tasks {
        created += t.await.unwrap();
    }
    assert_eq!(created, total);
    let listed = cloud
        .describe_network_interfaces(&tag_filter(&tag))
        .await
        .unwrap();
    assert_eq!(listed.len(), total);
    assert_eq!(
        listed.iter().map(|e| &e.id).collect::<BTreeSet<_>>().len(),
        total,
        "no ENI listed twice"
    );
    let pages: Vec<_> = env
        .emu
        .calls()
        .into_iter()
        .filter(|c| c.action == "DescribeNetworkInterfaces")
        .collect();
    assert_eq!(pages.len(), 2);
    assert!(pages[1].params.contains_key("NextToken"));
    assert_eq!(
        pages[0].params.get("MaxResults").map(String::as_str),
        Some("500")
    );

    // More ids than one request may carry are split into several requests.
    let ids: Vec<String> = listed
        .iter()
        .take(ENI_IDS_PER_REQUEST + 50)
        .map(|e| e.id.clone())
        .collect();
    let by_id = cloud
        .describe_network_interfaces(&EniFilter {
            eni_ids: ids.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_id.iter().map(|e| e.id.clone()).collect::<BTreeSet<_>>(),
        ids.into_iter().collect()
    );
    let describes = env
        .emu
        .calls()
        .into_iter()
        .filter(|c| c.action == "DescribeNetworkInterfaces")
        .count();
    assert_eq!(describes, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_percent_faults_every_logical_operation_succeeds() {
    let env = start_with(
        |c| {
            c.delays.attach_min_ms = 50;
            c.delays.attach_max_ms = 150;
            c.delays.detach_min_ms = 50;
            c.delays.detach_max_ms = 150;
        },
        |c| {
            for name in [
                backoff::DEFAULT,
                backoff::ENI_CREATE,
                backoff::ENI_OPS,
                backoff::ENI_IP_OPS,
            ] {
                c.backoff_override.insert(name.into(), quick(20, 12).into());
            }
        },
    );
    let mut faults = FaultConfig::default();
    faults
        .error_rate
        .insert(terway_emulator::faults::ALL_ACTIONS.into(), 0.2);
    faults
        .error_after_commit_rate
        .insert(terway_emulator::faults::ALL_ACTIONS.into(), 0.1);
    env.emu.set_faults(faults);
    let cloud = Arc::new(env.cloud.clone());
    let tag = suffix();
    let rounds = 6;
    let mut tasks = Vec::new();
    for _ in 0..rounds {
        let (cloud, tag) = (cloud.clone(), tag.clone());
        tasks.push(tokio::spawn(async move {
            let c = cloud.as_ref();
            let eni = c.create_network_interface(&eni_request(&tag, 1)).await?;
            c.attach_network_interface(&eni.id, INSTANCE, None).await?;
            wait_eni_status(
                c,
                &eni.id,
                EniStatus::InUse,
                c.backoff(backoff::WAIT_ENI_STATUS),
            )
            .await?;
            let ips = c.assign_private_ips(&eni.id, 2).await?;
            c.unassign_private_ips(&eni.id, &ips).await?;
            c.detach_network_interface(&eni.id, INSTANCE).await?;
            wait_eni_status(
                c,
                &eni.id,
                EniStatus::Available,
                c.backoff(backoff::WAIT_ENI_STATUS),
            )
            .await?;
            Ok::<_, terway_cloud::CloudError>(eni.id)
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(
            t.await
                .unwrap()
                .expect("every logical operation eventually succeeds"),
        );
    }
    assert_eq!(ids.len(), rounds);
    let ours: Vec<_> = env
        .emu
        .state()
        .enis
        .into_values()
        .filter(|e| e.tags.get("test") == Some(&tag))
        .collect();
    assert_eq!(ours.len(), rounds, "no duplicate ENIs");
    assert!(ours
        .iter()
        .all(|e| e.secondary_ips.len() == 1 && e.status == EniStatus::Available));
    for id in &ids {
        cloud.delete_network_interface(id).await.unwrap();
        wait_eni_deleted(
            cloud.as_ref(),
            id,
            cloud.backoff(backoff::ENI_DELETE_CONFIRM),
        )
        .await
        .unwrap();
    }
    assert!(
        env.emu.fired_faults().len() >= 5,
        "faults must actually fire"
    );
    assert!(!env
        .emu
        .state()
        .enis
        .values()
        .any(|e| e.tags.get("test") == Some(&tag)));
}

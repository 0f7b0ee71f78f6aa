//! Paging over more than 500 ENIs, and crash-consistent persistence: state reloaded after a restart,
//! an attach in flight at shutdown completing after it.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_over_more_than_500_enis() {
    let mut cfg = fast_config();
    cfg.throttling = false;
    let vsw = vswitch(&cfg);
    let emu = start(cfg);
    let api = std::sync::Arc::new(Api::new(&emu));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let api = std::sync::Arc::clone(&api);
        let vsw = vsw.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..66 {
                let tag = format!("{}", (worker * 66 + i) % 2);
                let body = api
                    .ecs(
                        "CreateNetworkInterface",
                        &[
                            ("VSwitchId", &vsw),
                            ("SecurityGroupId", "sg"),
                            ("Tag.1.Key", "parity"),
                            ("Tag.1.Value", &tag),
                        ],
                    )
                    .await
                    .ok();
                ids.push(body["NetworkInterfaceId"].as_str().unwrap().to_string());
            }
            ids
        }));
    }
    let mut created = BTreeSet::new();
    for t in tasks {
        created.extend(t.await.unwrap());
    }
    assert_eq!(created.len(), 528);

    // NextToken paging with the maximum page size.
    let mut seen = BTreeSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let mut params = vec![("MaxResults", "500"), ("Type", "Secondary")];
        if !token.is_empty() {
            params.push(("NextToken", token.as_str()));
        }
        let body = api.ecs("DescribeNetworkInterfaces", &params).await.ok();
        pages += 1;
        assert_eq!(body["TotalCount"], 528);
        for e in body["NetworkInterfaceSets"]["NetworkInterfaceSet"]
            .as_array()
            .unwrap()
        {
            assert!(
                seen.insert(e["NetworkInterfaceId"].as_str().unwrap().to_string()),
                "an ENI appeared twice"
            );
        }
        token = body["NextToken"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, created);

    // Tag filter with small pages.
    let mut even = 0;
    let mut token = String::new();
    loop {
        let mut params = vec![
            ("MaxResults", "100"),
            ("Tag.1.Key", "parity"),
            ("Tag.1.Value", "0"),
        ];
        if !token.is_empty() {
            params.push(("NextToken", token.as_str()));
        }
        let body = api.ecs("DescribeNetworkInterfaces", &params).await.ok();
        even += body["NetworkInterfaceSets"]["NetworkInterfaceSet"]
            .as_array()
            .unwrap()
            .len();
        token = body["NextToken"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(even, 264);

    // Page-number paging.
    let body = api
        .ecs(
            "DescribeNetworkInterfaces",
            &[
                ("PageSize", "100"),
                ("PageNumber", "6"),
                ("Status", "Available"),
            ],
        )
        .await
        .ok();
    assert_eq!(
        body["NetworkInterfaceSets"]["NetworkInterfaceSet"]
            .as_array()
            .unwrap()
            .len(),
        28
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_config();
    cfg.state_file = Some(dir.path().join("cloud.json"));
    cfg.delays.attach_min_ms = 300;
    cfg.delays.attach_max_ms = 300;
    let (inst, vsw) = (node(&cfg), vswitch(&cfg));

    let emu = start(cfg.clone());
    let api = Api::new(&emu);
    let kept = create_eni(&api, &vsw, 3).await;
    let attaching = create_eni(&api, &vsw, 0).await;
    api.ecs(
        "CreateNetworkInterface",
        &[
            ("VSwitchId", &vsw),
            ("SecurityGroupId", "sg"),
            ("ClientToken", "persisted-token"),
        ],
    )
    .await
    .ok();
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &attaching), ("InstanceId", &inst)],
    )
    .await
    .ok();
    let before = emu.state();
    emu.shutdown().await;
    assert!(dir.path().join("cloud.json").exists());
    assert!(
        !dir.path().join("cloud.tmp").exists(),
        "the temporary file was renamed into place"
    );

    let emu = start(cfg);
    let api = Api::new(&emu);
    let after = emu.state();
    assert_eq!(
        after.enis[&kept], before.enis[&kept],
        "ENI and its addresses are unchanged"
    );
    assert_eq!(
        after.vswitches, before.vswitches,
        "address books are unchanged"
    );
    // The attach that was in flight completes after the restart.
    wait_status(&api, &attaching, "InUse", Duration::from_secs(5)).await;
    // The ClientToken is remembered across the restart: replay creates nothing.
    let n = emu.state().enis.len();
    api.ecs(
        "CreateNetworkInterface",
        &[
            ("VSwitchId", &vsw),
            ("SecurityGroupId", "sg"),
            ("ClientToken", "persisted-token"),
        ],
    )
    .await
    .ok();
    assert_eq!(emu.state().enis.len(), n);
    // New addresses do not collide with persisted ones.
    let fresh = create_eni(&api, &vsw, 2).await;
    let st = emu.state();
    let mut all = BTreeSet::new();
    for e in st.enis.values() {
        for ip in e.all_ipv4() {
            assert!(all.insert(ip), "address {ip} is on two ENIs");
        }
    }
    assert!(st.enis.contains_key(&fresh));
    emu.shutdown().await;
}

//! ENI lifecycle over real HTTP: create, asynchronous attach, address assignment, detach, delete;
//! the state machine's timing and the errors of wrong-state operations.

mod common;

use std::time::Duration;

use common::*;
use terway_emulator::EmulatorConfig;

#[tokio::test]
async fn full_lifecycle_with_async_attach_and_detach() {
    let cfg = fast_config();
    let (inst, vsw) = (node(&cfg), vswitch(&cfg));
    let emu = start(cfg);
    let api = Api::new(&emu);

    let created = api
        .ecs(
            "CreateNetworkInterface",
            &[
                ("VSwitchId", &vsw),
                ("SecurityGroupIds.1", "sg-a"),
                ("SecurityGroupIds.2", "sg-b"),
                ("SecondaryPrivateIpAddressCount", "2"),
                ("Tag.1.Key", "creator"),
                ("Tag.1.Value", "terway"),
                ("Description", "interface create by terway"),
            ],
        )
        .await
        .ok();
    let eni = created["NetworkInterfaceId"].as_str().unwrap().to_string();
    assert!(eni.starts_with("eni-"));
    assert_eq!(created["Status"], "Available");
    assert_eq!(
        created["PrivateIpSets"]["PrivateIpSet"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(created["MacAddress"]
        .as_str()
        .unwrap()
        .starts_with("00:16:3e:"));
    assert_eq!(created["Tags"]["Tag"][0]["TagKey"], "creator");
    assert_eq!(
        created["SecurityGroupIds"]["SecurityGroupId"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", &inst)],
    )
    .await
    .ok();
    assert_eq!(
        eni_status(&api, &eni).await.as_deref(),
        Some("Attaching"),
        "attach is asynchronous"
    );
    // While attaching, address operations conflict.
    api.ecs(
        "AssignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &eni),
            ("SecondaryPrivateIpAddressCount", "1"),
        ],
    )
    .await
    .expect_err(403, "Operation.Conflict");
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", &inst)],
    )
    .await
    .expect_err(403, "Operation.Conflict");
    let took = wait_status(&api, &eni, "InUse", Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(20),
        "attach completed too early: {took:?}"
    );

    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", &inst)],
    )
    .await
    .expect_err(403, "InvalidOperation.InvalidEniState");
    api.ecs("DeleteNetworkInterface", &[("NetworkInterfaceId", &eni)])
        .await
        .expect_err(403, "InvalidOperation.InvalidEniState");

    let assigned = api
        .ecs(
            "AssignPrivateIpAddresses",
            &[
                ("NetworkInterfaceId", &eni),
                ("SecondaryPrivateIpAddressCount", "3"),
            ],
        )
        .await
        .ok();
    let new_ips: Vec<String> = assigned["AssignedPrivateIpAddressesSet"]["PrivateIpSet"]
        ["PrivateIpAddress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(new_ips.len(), 3);

    let attr = api
        .ecs(
            "DescribeNetworkInterfaceAttribute",
            &[("NetworkInterfaceId", &eni)],
        )
        .await
        .ok();
    assert_eq!(attr["Status"], "InUse");
    assert_eq!(attr["InstanceId"], inst.as_str());
    assert_eq!(attr["Attachment"]["InstanceId"], inst.as_str());
    assert_eq!(
        attr["PrivateIpSets"]["PrivateIpSet"]
            .as_array()
            .unwrap()
            .len(),
        6
    );

    let by_instance = api
        .ecs(
            "DescribeNetworkInterfaces",
            &[
                ("InstanceId", &inst),
                ("Type", "Secondary"),
                ("Tag.1.Key", "creator"),
                ("Tag.1.Value", "terway"),
            ],
        )
        .await
        .ok();
    let set = by_instance["NetworkInterfaceSets"]["NetworkInterfaceSet"]
        .as_array()
        .unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set[0]["NetworkInterfaceId"], eni.as_str());

    api.ecs(
        "UnassignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &eni),
            ("PrivateIpAddress.1", &new_ips[0]),
            ("PrivateIpAddress.2", &new_ips[1]),
        ],
    )
    .await
    .ok();
    api.ecs(
        "UnassignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &eni),
            ("PrivateIpAddress.1", &new_ips[0]),
        ],
    )
    .await
    .expect_err(400, "InvalidIp.IpUnassigned");

    api.ecs(
        "DetachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", &inst)],
    )
    .await
    .ok();
    assert_eq!(eni_status(&api, &eni).await.as_deref(), Some("Detaching"));
    api.ecs("DeleteNetworkInterface", &[("NetworkInterfaceId", &eni)])
        .await
        .expect_err(403, "InvalidOperation.InvalidEniState");
    wait_status(&api, &eni, "Available", Duration::from_secs(5)).await;
    api.ecs(
        "DetachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", &inst)],
    )
    .await
    .expect_err(403, "InvalidOperation.InvalidEniState");

    api.ecs("DeleteNetworkInterface", &[("NetworkInterfaceId", &eni)])
        .await
        .ok();
    api.ecs("DeleteNetworkInterface", &[("NetworkInterfaceId", &eni)])
        .await
        .expect_err(404, "InvalidEniId.NotFound");
    assert!(emu.state().enis.values().all(|e| e.id != eni));
    // Every address went back to the vSwitch: only the node's primary IP is in use.
    assert_eq!(emu.state().vswitches[&vsw].used_v4.len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn attach_delay_is_honoured() {
    let mut cfg = EmulatorConfig::default();
    cfg.delays.attach_min_ms = 400;
    cfg.delays.attach_max_ms = 500;
    let (inst, vsw) = (node(&cfg), vswitch(&cfg));
    let emu = start(cfg);
    let api = Api::new(&emu);
    let eni = create_eni(&api, &vsw, 0).await;
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", &inst)],
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(eni_status(&api, &eni).await.as_deref(), Some("Attaching"));
    let took = wait_status(&api, &eni, "InUse", Duration::from_secs(5)).await;
    assert!(took <= Duration::from_millis(600), "attach took {took:?}");
    emu.shutdown().await;
}

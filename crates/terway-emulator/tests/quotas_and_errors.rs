//! Quotas and error codes over HTTP: ENIs per instance, IPs per ENI, vSwitch exhaustion, not-found
//! resources, parameter validation, ClientToken replay / IdempotentFailed, and throttling.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use terway_emulator::{InstanceConfig, VSwitchConfig};

fn small_instance(id: &str, vsw: &str, ty: &str) -> InstanceConfig {
    InstanceConfig {
        id: id.into(),
        instance_type: ty.into(),
        vswitch_id: vsw.into(),
        zone_id: None,
        primary_mac: None,
        primary_ip: None,
        ram_role: None,
        hostname: None,
    }
}

#[tokio::test]
async fn eni_per_instance_and_ip_per_eni_quotas() {
    let cfg = fast_config();
    let vsw = vswitch(&cfg);
    let emu = start(cfg);
    let api = Api::new(&emu);
    // ecs.g6.large: 2 ENIs (primary included), 6 IPv4 per ENI.
    emu.add_instance(&small_instance(
        "i-small0000000000000001",
        &vsw,
        "ecs.g6.large",
    ))
    .unwrap();
    let inst = "i-small0000000000000001";

    let a = create_eni(&api, &vsw, 0).await;
    let b = create_eni(&api, &vsw, 0).await;
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &a), ("InstanceId", inst)],
    )
    .await
    .ok();
    // The quota counts an ENI that is still attaching.
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &b), ("InstanceId", inst)],
    )
    .await
    .expect_err(403, "EniPerInstanceLimitExceeded");
    wait_status(&api, &a, "InUse", Duration::from_secs(5)).await;

    api.ecs(
        "AssignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &a),
            ("SecondaryPrivateIpAddressCount", "5"),
        ],
    )
    .await
    .ok();
    api.ecs(
        "AssignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &a),
            ("SecondaryPrivateIpAddressCount", "1"),
        ],
    )
    .await
    .expect_err(403, "InvalidOperation.Ipv4CountExceeded");

    // An ENI with more addresses than the type allows cannot be attached to it.
    let big = create_eni(&api, &vsw, 10).await;
    emu.add_instance(&small_instance(
        "i-small0000000000000002",
        &vsw,
        "ecs.g6.large",
    ))
    .unwrap();
    api.ecs(
        "AttachNetworkInterface",
        &[
            ("NetworkInterfaceId", &big),
            ("InstanceId", "i-small0000000000000002"),
        ],
    )
    .await
    .expect_err(403, "InvalidOperation.Ipv4CountExceeded");

    // The g7.4xlarge figures DescribeInstanceTypes reports are the ones enforced.
    let types = api
        .ecs(
            "DescribeInstanceTypes",
            &[
                ("InstanceTypes.1", "ecs.g7.4xlarge"),
                ("InstanceTypes.2", "ecs.g6.large"),
            ],
        )
        .await
        .ok();
    let list = types["InstanceTypes"]["InstanceType"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let g7 = list
        .iter()
        .find(|t| t["InstanceTypeId"] == "ecs.g7.4xlarge")
        .unwrap();
    assert_eq!(
        (
            g7["EniQuantity"].as_u64(),
            g7["EniPrivateIpAddressQuantity"].as_u64()
        ),
        (Some(8), Some(30))
    );
    assert_eq!(g7["EniTrunkSupported"], true);
    let all = api.ecs("DescribeInstanceTypes", &[]).await.ok();
    assert!(
        all["InstanceTypes"]["InstanceType"]
            .as_array()
            .unwrap()
            .len()
            >= 8
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn vswitch_exhaustion() {
    let mut cfg = fast_config();
    // A /29 has 4 usable addresses; the node's primary takes one.
    cfg.vswitches.push(VSwitchConfig {
        id: "vsw-tiny".into(),
        zone_id: cfg.vswitches[0].zone_id.clone(),
        cidr: "10.128.255.0/29".parse().unwrap(),
        ipv6_cidr: None,
    });
    let emu = start(cfg);
    let api = Api::new(&emu);
    let eni = create_eni(&api, "vsw-tiny", 3).await;
    api.ecs(
        "CreateNetworkInterface",
        &[("VSwitchId", "vsw-tiny"), ("SecurityGroupId", "sg")],
    )
    .await
    .expect_err(403, "InvalidVSwitchId.IpNotEnough");
    let vsws = api
        .vpc("DescribeVSwitches", &[("VSwitchId", "vsw-tiny")])
        .await
        .ok();
    assert_eq!(
        vsws["VSwitches"]["VSwitch"][0]["AvailableIpAddressCount"],
        0
    );
    assert_eq!(
        vsws["VSwitches"]["VSwitch"][0]["CidrBlock"],
        "10.128.255.0/29"
    );
    // Freeing addresses makes room again.
    api.ecs("DeleteNetworkInterface", &[("NetworkInterfaceId", &eni)])
        .await
        .ok();
    create_eni(&api, "vsw-tiny", 1).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn not_found_and_parameter_errors() {
    let cfg = fast_config();
    let (inst, vsw) = (node(&cfg), vswitch(&cfg));
    let emu = start(cfg);
    let api = Api::new(&emu);
    let ghost = "eni-doesnotexist000000";
    api.ecs(
        "DescribeNetworkInterfaceAttribute",
        &[("NetworkInterfaceId", ghost)],
    )
    .await
    .expect_err(404, "InvalidEniId.NotFound");
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", ghost), ("InstanceId", &inst)],
    )
    .await
    .expect_err(404, "InvalidEniId.NotFound");
    api.ecs(
        "AssignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", ghost),
            ("SecondaryPrivateIpAddressCount", "1"),
        ],
    )
    .await
    .expect_err(404, "InvalidEniId.NotFound");
    let eni = create_eni(&api, &vsw, 0).await;
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", "i-nobody")],
    )
    .await
    .expect_err(404, "InvalidEcsId.NotFound");
    api.ecs(
        "DetachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", "i-nobody")],
    )
    .await
    .expect_err(404, "InvalidEcsId.NotFound");
    api.ecs(
        "CreateNetworkInterface",
        &[("VSwitchId", "vsw-nowhere"), ("SecurityGroupId", "sg")],
    )
    .await
    .expect_err(404, "InvalidVSwitchId.NotFound");
    api.ecs("CreateNetworkInterface", &[("SecurityGroupId", "sg")])
        .await
        .expect_err(400, "MissingParameter");
    api.ecs("CreateNetworkInterface", &[("VSwitchId", &vsw)])
        .await
        .expect_err(400, "MissingParameter");
    api.ecs(
        "CreateNetworkInterface",
        &[
            ("VSwitchId", &vsw),
            ("SecurityGroupId", "sg"),
            ("SecondaryPrivateIpAddressCount", "many"),
        ],
    )
    .await
    .expect_err(400, "InvalidParameter");
    api.ecs("DescribeNetworkInterfaces", &[("MaxResults", "501")])
        .await
        .expect_err(400, "InvalidParameter");
    api.ecs("AssignPrivateIpAddresses", &[("NetworkInterfaceId", &eni)])
        .await
        .expect_err(400, "MissingParameter");
    // The primary ENI can be neither detached nor deleted.
    let primary = emu.state().instances[&inst].primary_eni_id.clone();
    api.ecs(
        "DeleteNetworkInterface",
        &[("NetworkInterfaceId", &primary)],
    )
    .await
    .expect_err(403, "InvalidOperation.InvalidEniState");
    api.ecs(
        "DetachNetworkInterface",
        &[("NetworkInterfaceId", &primary), ("InstanceId", &inst)],
    )
    .await
    .expect_err(403, "InvalidOperation.DetachPrimaryEniNotAllowed");
    // Explicit addresses: taken ones are refused.
    let node_ip = emu.state().enis[&primary].primary_ip.to_string();
    api.ecs(
        "AssignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &eni),
            ("PrivateIpAddress.1", &node_ip),
        ],
    )
    .await
    .expect_err(400, "InvalidPrivateIpAddress.Duplicated");
    emu.shutdown().await;
}

#[tokio::test]
async fn client_token_replays_and_idempotent_failed() {
    let cfg = fast_config();
    let vsw = vswitch(&cfg);
    let emu = start(cfg);
    let api = Api::new(&emu);
    let params = [
        ("VSwitchId", vsw.as_str()),
        ("SecurityGroupId", "sg"),
        ("SecondaryPrivateIpAddressCount", "2"),
        ("ClientToken", "tok-1"),
    ];
    let first = api.ecs("CreateNetworkInterface", &params).await.ok();
    let again = api.ecs("CreateNetworkInterface", &params).await.ok();
    assert_eq!(first["NetworkInterfaceId"], again["NetworkInterfaceId"]);
    assert_eq!(first["PrivateIpSets"], again["PrivateIpSets"]);
    assert_ne!(first["RequestId"], again["RequestId"]);
    assert_eq!(emu.state().enis.len(), 2, "the replay created nothing");
    let changed = [
        ("VSwitchId", vsw.as_str()),
        ("SecurityGroupId", "sg"),
        ("SecondaryPrivateIpAddressCount", "3"),
        ("ClientToken", "tok-1"),
    ];
    api.ecs("CreateNetworkInterface", &changed)
        .await
        .expect_err(400, "IdempotentFailed");

    let eni = first["NetworkInterfaceId"].as_str().unwrap();
    let assign = [
        ("NetworkInterfaceId", eni),
        ("SecondaryPrivateIpAddressCount", "2"),
        ("ClientToken", "tok-2"),
    ];
    let a1 = api.ecs("AssignPrivateIpAddresses", &assign).await.ok();
    let a2 = api.ecs("AssignPrivateIpAddresses", &assign).await.ok();
    assert_eq!(
        a1["AssignedPrivateIpAddressesSet"],
        a2["AssignedPrivateIpAddressesSet"]
    );
    assert_eq!(emu.state().enis[eni].secondary_ips.len(), 4);

    // A failed call does not consume its token: the retry with the same token can still succeed.
    let bad = [
        ("VSwitchId", "vsw-nowhere"),
        ("SecurityGroupId", "sg"),
        ("ClientToken", "tok-3"),
    ];
    api.ecs("CreateNetworkInterface", &bad)
        .await
        .expect_err(404, "InvalidVSwitchId.NotFound");
    assert!(!emu.state().tokens.keys().any(|k| k.ends_with("tok-3")));
    emu.shutdown().await;
}

#[tokio::test]
async fn per_action_token_bucket_throttles() {
    let mut cfg = fast_config();
    cfg.rate_limits = BTreeMap::from([("DescribeNetworkInterfaces".to_string(), 5)]);
    let emu = start(cfg);
    let api = Api::new(&emu);
    for _ in 0..5 {
        api.ecs("DescribeNetworkInterfaces", &[]).await.ok();
    }
    api.ecs("DescribeNetworkInterfaces", &[])
        .await
        .expect_err(400, "Throttling.User");
    // Other actions have their own bucket.
    api.vpc("DescribeVSwitches", &[]).await.ok();
    // 5 per minute refills one token every 12 s; lifting the limit at runtime works immediately.
    emu.set_rate_limits(
        true,
        BTreeMap::from([("DescribeNetworkInterfaces".to_string(), 600)]),
    );
    api.ecs("DescribeNetworkInterfaces", &[]).await.ok();
    assert!(emu.calls().iter().any(|c| c.code == "Throttling.User"));
    emu.shutdown().await;
}

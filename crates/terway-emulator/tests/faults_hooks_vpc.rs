//! Fault injection (runtime admin endpoint, error rates, after-commit errors, Describe lag), the
//! fabric hook contract, trunk/member ENIs, IPv6 and VPC route entries.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use terway_cloud::NetworkInterface;
use terway_emulator::{FabricHook, FaultConfig, VSwitchConfig};

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    refuse: Mutex<Option<String>>,
}

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl FabricHook for Recorder {
    fn eni_attached(&self, instance_id: &str, eni: &NetworkInterface) -> Result<(), String> {
        // Slow on purpose: the API must keep reporting Attaching until the fabric is done.
        std::thread::sleep(Duration::from_millis(200));
        self.events.lock().unwrap().push(format!(
            "attached {} {instance_id} ips={}",
            eni.id,
            eni.private_ips.len()
        ));
        if self.refuse.lock().unwrap().as_deref() == Some(eni.id.as_str()) {
            return Err("no free slot in the node netns".into());
        }
        Ok(())
    }
    fn eni_detached(&self, instance_id: &str, eni: &NetworkInterface) {
        self.events
            .lock()
            .unwrap()
            .push(format!("detached {} {instance_id}", eni.id));
    }
    fn ips_assigned(&self, eni_id: &str, ips: &[IpAddr]) {
        self.events
            .lock()
            .unwrap()
            .push(format!("assigned {eni_id} {}", ips.len()));
    }
    fn ips_unassigned(&self, eni_id: &str, ips: &[IpAddr]) {
        self.events
            .lock()
            .unwrap()
            .push(format!("unassigned {eni_id} {}", ips.len()));
    }
    fn route_entry_added(&self, dst: ipnet::Ipv4Net, instance_id: &str) {
        self.events
            .lock()
            .unwrap()
            .push(format!("route+ {dst} {instance_id}"));
    }
    fn route_entry_removed(&self, dst: ipnet::Ipv4Net, instance_id: &str) {
        self.events
            .lock()
            .unwrap()
            .push(format!("route- {dst} {instance_id}"));
    }
}

#[tokio::test]
async fn fabric_hook_runs_before_in_use_and_can_fail_an_attach() {
    let cfg = fast_config();
    let (inst, vsw) = (node(&cfg), vswitch(&cfg));
    let hook = Arc::new(Recorder::default());
    let emu = start_with(cfg, hook.clone());
    let api = Api::new(&emu);

    let eni = create_eni(&api, &vsw, 1).await;
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", &inst)],
    )
    .await
    .ok();
    // The attach delay is ≤ 100 ms and the hook takes 200 ms: at 150 ms the ENI must still attach.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(eni_status(&api, &eni).await.as_deref(), Some("Attaching"));
    wait_status(&api, &eni, "InUse", Duration::from_secs(5)).await;
    assert!(hook
        .events()
        .contains(&format!("attached {eni} {inst} ips=2")));

    api.ecs(
        "AssignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &eni),
            ("SecondaryPrivateIpAddressCount", "3"),
        ],
    )
    .await
    .ok();
    assert!(
        hook.events().contains(&format!("assigned {eni} 3")),
        "the fabric knows before the call returns"
    );
    let ip = emu.state().enis[&eni].secondary_ips[0].to_string();
    api.ecs(
        "UnassignPrivateIpAddresses",
        &[("NetworkInterfaceId", &eni), ("PrivateIpAddress.1", &ip)],
    )
    .await
    .ok();
    assert!(hook.events().contains(&format!("unassigned {eni} 1")));
    api.ecs(
        "DetachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", &inst)],
    )
    .await
    .ok();
    wait_status(&api, &eni, "Available", Duration::from_secs(5)).await;
    assert!(hook.events().contains(&format!("detached {eni} {inst}")));

    // A refused attach sends the ENI back to Available, recorded as a fired fault.
    let refused = create_eni(&api, &vsw, 0).await;
    *hook.refuse.lock().unwrap() = Some(refused.clone());
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &refused), ("InstanceId", &inst)],
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(400)).await;
    wait_status(&api, &refused, "Available", Duration::from_secs(5)).await;
    assert!(emu.state().enis[&refused].instance_id.is_none());
    assert!(emu
        .fired_faults()
        .iter()
        .any(|f| f.kind == "fabric_attach_failed" && f.detail.contains(&refused)));
    emu.shutdown().await;
}

#[tokio::test]
async fn injected_errors_latency_and_after_commit_failures() {
    let cfg = fast_config();
    let vsw = vswitch(&cfg);
    let emu = start(cfg);
    let api = Api::new(&emu);
    let http = http_client();
    let admin = emu
        .admin_url()
        .expect("Emulator::start serves the admin API over TCP");

    // Runtime configuration through the admin endpoint.
    let faults = FaultConfig {
        error_rate: BTreeMap::from([("DescribeVSwitches".to_string(), 1.0)]),
        extra_latency_ms: BTreeMap::from([("DescribeInstanceTypes".to_string(), 150)]),
        ..FaultConfig::default()
    };
    post_faults(&http, &admin, &faults).await;
    assert_eq!(emu.faults(), faults);
    for _ in 0..4 {
        let a = api.vpc("DescribeVSwitches", &[]).await;
        assert!(
            matches!(
                (a.status, a.code()),
                (500, "InternalError") | (503, "ServiceUnavailable")
            ),
            "{}",
            a.body
        );
    }
    let t = std::time::Instant::now();
    api.ecs("DescribeInstanceTypes", &[]).await.ok();
    assert!(t.elapsed() >= Duration::from_millis(150));

    // An error after commit: the ENI exists although the caller saw InternalError.
    emu.set_faults(FaultConfig {
        error_after_commit_rate: BTreeMap::from([("CreateNetworkInterface".to_string(), 1.0)]),
        ..FaultConfig::default()
    });
    let params = [
        ("VSwitchId", vsw.as_str()),
        ("SecurityGroupId", "sg"),
        ("ClientToken", "after-commit"),
    ];
    api.ecs("CreateNetworkInterface", &params)
        .await
        .expect_err(500, "InternalError");
    assert_eq!(emu.state().enis.len(), 2);
    emu.set_faults(FaultConfig::default());
    // The retry with the same ClientToken returns the ENI that was made: no duplicate.
    let replay = api.ecs("CreateNetworkInterface", &params).await.ok();
    assert!(emu
        .state()
        .enis
        .contains_key(replay["NetworkInterfaceId"].as_str().unwrap()));
    assert_eq!(emu.state().enis.len(), 2);

    let listed = get_faults(&http, &admin).await;
    let kinds: Vec<&str> = listed["fired"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"error")
            && kinds.contains(&"latency")
            && kinds.contains(&"error_after_commit")
    );
    let calls: serde_json::Value = http
        .get(format!("{admin}/_emulator/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(calls
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["action"] == "DescribeVSwitches" && c["status"] != 200));
    let state: serde_json::Value = http
        .get(format!("{admin}/_emulator/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["enis"].as_object().unwrap().len(), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn describe_lag_serves_stale_reads() {
    let mut cfg = fast_config();
    cfg.faults.describe_lag_ms = 400;
    let vsw = vswitch(&cfg);
    let emu = start(cfg);
    let api = Api::new(&emu);
    api.ecs("DescribeNetworkInterfaces", &[]).await.ok();
    let eni = create_eni(&api, &vsw, 0).await;
    assert_eq!(
        eni_status(&api, &eni).await,
        None,
        "a fresh ENI is not visible to a lagging Describe"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(eni_status(&api, &eni).await.as_deref(), Some("Available"));
    emu.shutdown().await;
}

#[tokio::test]
async fn trunk_and_member_enis() {
    let cfg = fast_config();
    let (inst, vsw) = (node(&cfg), vswitch(&cfg));
    let emu = start(cfg);
    let api = Api::new(&emu);
    let trunk = api
        .ecs(
            "CreateNetworkInterface",
            &[
                ("VSwitchId", &vsw),
                ("SecurityGroupId", "sg"),
                ("InstanceType", "Trunk"),
            ],
        )
        .await
        .ok()["NetworkInterfaceId"]
        .as_str()
        .unwrap()
        .to_string();
    let member = create_eni(&api, &vsw, 0).await;
    // The trunk must be attached first.
    api.ecs(
        "AttachNetworkInterface",
        &[
            ("NetworkInterfaceId", &member),
            ("InstanceId", &inst),
            ("TrunkNetworkInstanceId", &trunk),
        ],
    )
    .await
    .expect_err(403, "InvalidOperation.InvalidEniState");
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &trunk), ("InstanceId", &inst)],
    )
    .await
    .ok();
    wait_status(&api, &trunk, "InUse", Duration::from_secs(5)).await;
    api.ecs(
        "AttachNetworkInterface",
        &[
            ("NetworkInterfaceId", &member),
            ("InstanceId", &inst),
            ("TrunkNetworkInstanceId", &trunk),
        ],
    )
    .await
    .ok();
    wait_status(&api, &member, "InUse", Duration::from_secs(5)).await;
    let attr = api
        .ecs(
            "DescribeNetworkInterfaceAttribute",
            &[("NetworkInterfaceId", &member)],
        )
        .await
        .ok();
    assert_eq!(attr["Type"], "Member");
    assert_eq!(
        attr["Attachment"]["TrunkNetworkInterfaceId"],
        trunk.as_str()
    );
    let t = api
        .ecs(
            "DescribeNetworkInterfaceAttribute",
            &[("NetworkInterfaceId", &trunk)],
        )
        .await
        .ok();
    assert_eq!(
        t["Attachment"]["MemberNetworkInterfaceIds"]["MemberNetworkInterfaceId"][0],
        member.as_str()
    );
    api.ecs(
        "DetachNetworkInterface",
        &[("NetworkInterfaceId", &trunk), ("InstanceId", &inst)],
    )
    .await
    .expect_err(403, "InvalidOperation.InvalidEniState");
    api.ecs(
        "DetachNetworkInterface",
        &[
            ("NetworkInterfaceId", &member),
            ("InstanceId", &inst),
            ("TrunkNetworkInstanceId", &trunk),
        ],
    )
    .await
    .ok();
    wait_status(&api, &member, "Available", Duration::from_secs(5)).await;
    assert_eq!(
        emu.state().enis[&member].eni_type,
        terway_cloud::EniType::Secondary
    );
    api.ecs(
        "DetachNetworkInterface",
        &[("NetworkInterfaceId", &trunk), ("InstanceId", &inst)],
    )
    .await
    .ok();
    emu.shutdown().await;
}

#[tokio::test]
async fn ipv6_addresses() {
    let mut cfg = fast_config();
    cfg.vpc.ipv6_cidr = Some("fd00:10:128::/56".parse().unwrap());
    cfg.vswitches.push(VSwitchConfig {
        id: "vsw-dual".into(),
        zone_id: cfg.vswitches[0].zone_id.clone(),
        cidr: "10.128.64.0/24".parse().unwrap(),
        ipv6_cidr: Some("fd00:10:128:1::/64".parse().unwrap()),
    });
    let vsw = vswitch(&cfg);
    let emu = start(cfg);
    let api = Api::new(&emu);
    api.ecs(
        "CreateNetworkInterface",
        &[
            ("VSwitchId", &vsw),
            ("SecurityGroupId", "sg"),
            ("Ipv6AddressCount", "1"),
        ],
    )
    .await
    .expect_err(403, "InvalidVSwitchId.Ipv6NotTurnOn");
    let created = api
        .ecs(
            "CreateNetworkInterface",
            &[
                ("VSwitchId", "vsw-dual"),
                ("SecurityGroupId", "sg"),
                ("Ipv6AddressCount", "2"),
            ],
        )
        .await
        .ok();
    let eni = created["NetworkInterfaceId"].as_str().unwrap().to_string();
    assert_eq!(created["Ipv6Sets"]["Ipv6Set"].as_array().unwrap().len(), 2);
    let added = api
        .ecs(
            "AssignIpv6Addresses",
            &[
                ("NetworkInterfaceId", &eni),
                ("Ipv6AddressCount", "3"),
                ("ClientToken", "v6"),
            ],
        )
        .await
        .ok();
    let new: Vec<String> = added["Ipv6Sets"]["Ipv6Address"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(new.len(), 3);
    assert!(new.iter().all(|ip| ip.starts_with("fd00:10:128:1:")));
    api.ecs(
        "UnassignIpv6Addresses",
        &[("NetworkInterfaceId", &eni), ("Ipv6Address.1", &new[0])],
    )
    .await
    .ok();
    api.ecs(
        "UnassignIpv6Addresses",
        &[("NetworkInterfaceId", &eni), ("Ipv6Address.1", &new[0])],
    )
    .await
    .expect_err(400, "InvalidIp.IpUnassigned");
    assert_eq!(emu.state().enis[&eni].ipv6.len(), 4);
    let vsws = api
        .vpc("DescribeVSwitches", &[("VSwitchId", "vsw-dual")])
        .await
        .ok();
    assert_eq!(
        vsws["VSwitches"]["VSwitch"][0]["Ipv6CidrBlock"],
        "fd00:10:128:1::/64"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn vpc_route_entries() {
    let cfg = fast_config();
    let inst = node(&cfg);
    let table = cfg.vpc.route_table_id.clone();
    let hook = Arc::new(Recorder::default());
    let emu = start_with(cfg, hook.clone());
    let api = Api::new(&emu);
    let created = api
        .vpc(
            "CreateRouteEntry",
            &[
                ("RouteTableId", &table),
                ("DestinationCidrBlock", "172.20.1.0/24"),
                ("NextHopType", "Instance"),
                ("NextHopId", &inst),
            ],
        )
        .await
        .ok();
    assert!(created["RouteEntryId"]
        .as_str()
        .unwrap()
        .starts_with("rte-"));
    assert!(hook
        .events()
        .contains(&format!("route+ 172.20.1.0/24 {inst}")));
    api.vpc(
        "CreateRouteEntry",
        &[
            ("RouteTableId", &table),
            ("DestinationCidrBlock", "172.20.1.0/24"),
            ("NextHopId", &inst),
        ],
    )
    .await
    .expect_err(400, "RouterEntryConflict.Duplicated");
    api.vpc(
        "CreateRouteEntry",
        &[
            ("RouteTableId", "vtb-other"),
            ("DestinationCidrBlock", "172.20.2.0/24"),
            ("NextHopId", &inst),
        ],
    )
    .await
    .expect_err(404, "InvalidRouteTableId.NotFound");
    let listed = api
        .vpc("DescribeRouteEntryList", &[("RouteTableId", &table)])
        .await
        .ok();
    let entries = listed["RouteEntrys"]["RouteEntry"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0]["NextHops"]["NextHop"][0]["NextHopId"],
        inst.as_str()
    );
    api.vpc(
        "DeleteRouteEntry",
        &[
            ("RouteTableId", &table),
            ("DestinationCidrBlock", "172.20.1.0/24"),
            ("NextHopId", &inst),
        ],
    )
    .await
    .ok();
    assert!(hook
        .events()
        .contains(&format!("route- 172.20.1.0/24 {inst}")));
    api.vpc(
        "DeleteRouteEntry",
        &[
            ("RouteTableId", &table),
            ("DestinationCidrBlock", "172.20.1.0/24"),
        ],
    )
    .await
    .expect_err(404, "InvalidRouteEntry.NotFound");
    emu.shutdown().await;
}

#[tokio::test]
async fn injected_attach_failure_and_asynchronous_delete() {
    let mut cfg = fast_config();
    cfg.delays.delete_min_ms = 200;
    cfg.delays.delete_max_ms = 250;
    let (inst, vsw) = (node(&cfg), vswitch(&cfg));
    let hook = Arc::new(Recorder::default());
    let emu = start_with(cfg, hook.clone());
    let api = Api::new(&emu);

    emu.set_faults(FaultConfig {
        attach_failure_rate: 1.0,
        ..FaultConfig::default()
    });
    let eni = create_eni(&api, &vsw, 1).await;
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", &inst)],
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(150)).await;
    wait_status(&api, &eni, "Available", Duration::from_secs(5)).await;
    assert!(
        hook.events().is_empty(),
        "the fabric never hears of a failed attach"
    );
    assert!(emu.fired_faults().iter().any(|f| f.kind == "attach_failed"));
    emu.set_faults(FaultConfig::default());

    let used_before = emu.state().vswitches[&vsw].used_v4.len();
    api.ecs("DeleteNetworkInterface", &[("NetworkInterfaceId", &eni)])
        .await
        .ok();
    assert_eq!(eni_status(&api, &eni).await.as_deref(), Some("Deleting"));
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", &inst)],
    )
    .await
    .expect_err(403, "Operation.Conflict");
    api.ecs("DeleteNetworkInterface", &[("NetworkInterfaceId", &eni)])
        .await
        .expect_err(403, "InvalidOperation.InvalidEniState");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        eni_status(&api, &eni).await,
        None,
        "gone after the delete delay"
    );
    assert_eq!(
        emu.state().vswitches[&vsw].used_v4.len(),
        used_before - 2,
        "addresses released"
    );
    emu.shutdown().await;
}

//! The metadata service over HTTP: token flow (missing, bad TTL, expired), instance identity by
//! header and by source address, ENIs visible only once attached, address lists.

mod common;

use std::time::Duration;

use common::*;
use terway_emulator::{InstanceConfig, VSwitchConfig, VpcConfig};

struct Md {
    http: reqwest::Client,
    url: String,
    token: String,
    instance: Option<String>,
}

impl Md {
    async fn new(emu: &terway_emulator::RunningEmulator, instance: Option<&str>) -> Self {
        let http = http_client();
        let url = emu.metadata_url();
        let token = http
            .put(format!("{url}/latest/api/token"))
            .header("X-aliyun-ecs-metadata-token-ttl-seconds", "300")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        Self {
            http,
            url,
            token,
            instance: instance.map(str::to_string),
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let mut rb = self
            .http
            .get(format!("{}/latest/meta-data/{path}", self.url))
            .header("X-aliyun-ecs-metadata-token", &self.token);
        if let Some(i) = &self.instance {
            rb = rb.header("X-Emulator-Instance-Id", i);
        }
        let resp = rb.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn ok(&self, path: &str) -> String {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

#[tokio::test]
async fn token_flow() {
    let cfg = fast_config();
    let inst = node(&cfg);
    let emu = start(cfg);
    let http = http_client();
    let url = emu.metadata_url();
    let no_token = http
        .get(format!("{url}/latest/meta-data/instance-id"))
        .header("X-Emulator-Instance-Id", &inst)
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status().as_u16(), 401);
    let bad_ttl = http
        .put(format!("{url}/latest/api/token"))
        .header("X-aliyun-ecs-metadata-token-ttl-seconds", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_ttl.status().as_u16(), 400);
    let no_ttl = http
        .put(format!("{url}/latest/api/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_ttl.status().as_u16(), 400);
    let short = http
        .put(format!("{url}/latest/api/token"))
        .header("X-aliyun-ecs-metadata-token-ttl-seconds", "1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let read = |tok: String| {
        http.get(format!("{url}/latest/meta-data/instance-id"))
            .header("X-aliyun-ecs-metadata-token", tok)
            .header("X-Emulator-Instance-Id", &inst)
            .send()
    };
    let r = read(short.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), inst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        read(short).await.unwrap().status().as_u16(),
        401,
        "an expired token is refused"
    );
    assert_eq!(read("forged".into()).await.unwrap().status().as_u16(), 401);
    emu.shutdown().await;
}

#[tokio::test]
async fn eni_appears_only_after_attach_completes() {
    let mut cfg = fast_config();
    cfg.delays.attach_min_ms = 300;
    cfg.delays.attach_max_ms = 300;
    let (inst, vsw) = (node(&cfg), vswitch(&cfg));
    let emu = start(cfg);
    let api = Api::new(&emu);
    let md = Md::new(&emu, Some(&inst)).await;

    let st = emu.state();
    let primary = &st.enis[&st.instances[&inst].primary_eni_id];
    assert_eq!(md.ok("instance-id").await, inst);
    assert_eq!(md.ok("instance/instance-type").await, "ecs.g7.4xlarge");
    assert_eq!(md.ok("region-id").await, "cn-hangzhou");
    assert_eq!(md.ok("zone-id").await, st.instances[&inst].zone_id);
    assert_eq!(md.ok("vpc-id").await, st.vpc.id);
    assert_eq!(md.ok("vpc-cidr-block").await, "10.128.0.0/16");
    assert_eq!(md.ok("vswitch-id").await, vsw);
    assert_eq!(md.ok("vswitch-cidr-block").await, "10.128.0.0/20");
    assert_eq!(md.ok("mac").await, primary.mac);
    assert_eq!(
        md.ok("network/interfaces/macs/").await,
        format!("{}/", primary.mac)
    );

    let eni = create_eni(&api, &vsw, 2).await;
    api.ecs(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", &eni), ("InstanceId", &inst)],
    )
    .await
    .ok();
    let mac = emu.state().enis[&eni].mac.clone();
    assert!(
        !md.ok("network/interfaces/macs/").await.contains(&mac),
        "visible while still attaching"
    );
    assert_eq!(
        md.get(&format!(
            "network/interfaces/macs/{mac}/network-interface-id"
        ))
        .await
        .0,
        404
    );
    wait_status(&api, &eni, "InUse", Duration::from_secs(5)).await;
    assert!(md
        .ok("network/interfaces/macs/")
        .await
        .contains(&format!("{mac}/")));
    let base = format!("network/interfaces/macs/{mac}");
    assert_eq!(md.ok(&format!("{base}/network-interface-id")).await, eni);
    assert_eq!(md.ok(&format!("{base}/gateway")).await, "10.128.15.253");
    assert_eq!(md.ok(&format!("{base}/vswitch-id")).await, vsw);
    assert_eq!(
        md.ok(&format!("{base}/vswitch-cidr-block")).await,
        "10.128.0.0/20"
    );
    let e = emu.state().enis[&eni].clone();
    assert_eq!(
        md.ok(&format!("{base}/primary-ip-address")).await,
        e.primary_ip.to_string()
    );
    let ips: Vec<String> =
        serde_json::from_str(&md.ok(&format!("{base}/private-ipv4s")).await).unwrap();
    assert_eq!(
        ips,
        e.all_ipv4()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        md.get(&format!("{base}/ipv6s")).await.0,
        404,
        "no IPv6 addresses: 404"
    );

    // Assign/unassign are reflected.
    let added = api
        .ecs(
            "AssignPrivateIpAddresses",
            &[
                ("NetworkInterfaceId", &eni),
                ("SecondaryPrivateIpAddressCount", "1"),
            ],
        )
        .await
        .ok();
    let new_ip = added["AssignedPrivateIpAddressesSet"]["PrivateIpSet"]["PrivateIpAddress"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(md
        .ok(&format!("{base}/private-ipv4s"))
        .await
        .contains(&new_ip));
    api.ecs(
        "UnassignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &eni),
            ("PrivateIpAddress.1", &new_ip),
        ],
    )
    .await
    .ok();
    assert!(!md
        .ok(&format!("{base}/private-ipv4s"))
        .await
        .contains(&new_ip));

    // Another instance does not see it.
    let other = Md::new(&emu, Some("i-unknown")).await;
    assert_eq!(other.get("instance-id").await.0, 404);
    emu.shutdown().await;
}

#[tokio::test]
async fn instance_identified_by_source_address() {
    // A VPC on loopback so the test's own source address (127.0.0.1) is a node's primary IP.
    let mut cfg = fast_config();
    cfg.vpc = VpcConfig {
        id: "vpc-lo".into(),
        cidr: "127.0.0.0/16".parse().unwrap(),
        ipv6_cidr: None,
        route_table_id: "vtb-lo".into(),
    };
    cfg.vswitches = vec![VSwitchConfig {
        id: "vsw-lo".into(),
        zone_id: "z-lo".into(),
        cidr: "127.0.0.0/24".parse().unwrap(),
        ipv6_cidr: None,
    }];
    cfg.instances = vec![InstanceConfig {
        id: "i-lo".into(),
        instance_type: "ecs.g7.large".into(),
        vswitch_id: "vsw-lo".into(),
        zone_id: None,
        primary_mac: Some("00:16:3E:00:00:01".into()),
        primary_ip: Some("127.0.0.1".parse().unwrap()),
        ram_role: None,
        hostname: Some("node-lo".into()),
    }];
    let emu = start(cfg);
    let md = Md::new(&emu, None).await;
    assert_eq!(md.ok("instance-id").await, "i-lo");
    assert_eq!(md.ok("mac").await, "00:16:3e:00:00:01");
    assert_eq!(md.ok("hostname").await, "node-lo");
    assert_eq!(
        md.get("ram/security-credentials/").await.0,
        404,
        "no RAM role attached"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn metadata_lag_delays_new_addresses() {
    let cfg = fast_config();
    let inst = node(&cfg);
    let emu = start(cfg);
    let api = Api::new(&emu);
    emu.set_faults(terway_emulator::FaultConfig {
        metadata_lag_ms: 400,
        ..Default::default()
    });
    let md = Md::new(&emu, Some(&inst)).await;
    let st = emu.state();
    let primary = &st.enis[&st.instances[&inst].primary_eni_id];
    let path = format!("network/interfaces/macs/{}/private-ipv4s", primary.mac);
    assert_eq!(md.ok(&path).await, format!("[\"{}\"]", primary.primary_ip));
    let added = api
        .ecs(
            "AssignPrivateIpAddresses",
            &[
                ("NetworkInterfaceId", &primary.id),
                ("SecondaryPrivateIpAddressCount", "1"),
            ],
        )
        .await
        .ok();
    let ip = added["AssignedPrivateIpAddressesSet"]["PrivateIpSet"]["PrivateIpAddress"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !md.ok(&path).await.contains(&ip),
        "metadata lags behind the API"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(md.ok(&path).await.contains(&ip));
    emu.shutdown().await;
}

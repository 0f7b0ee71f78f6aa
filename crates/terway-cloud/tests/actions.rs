//! Every action of the `Cloud` trait against the emulator over real HTTP, with the asynchronous
//! attach/detach waited for and checked against what the metadata service shows.

mod common;

use std::collections::BTreeMap;

use common::*;
use terway_cloud::backoff;
use terway_cloud::wait::{wait_eni_deleted, wait_eni_status};
use terway_cloud::{
    Cloud, EniFilter, EniStatus, EniType, Metadata, MetadataClient, SignatureMethod,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eni_lifecycle_with_async_attach_and_metadata() {
    let env = start_with(
        |c| {
            c.delays.attach_min_ms = 900;
            c.delays.attach_max_ms = 1000;
        },
        |_| {},
    );
    let cloud = &env.cloud;
    let tag = suffix();
    let eni = cloud
        .create_network_interface(&eni_request(&tag, 2))
        .await
        .unwrap();
    assert_eq!(eni.status, EniStatus::Available);
    assert_eq!(eni.eni_type, EniType::Secondary);
    assert_eq!(eni.private_ips.len(), 3);
    assert_eq!(eni.tags["test"], tag);
    assert!(eni.id.starts_with("eni-"));

    cloud
        .attach_network_interface(&eni.id, INSTANCE, None)
        .await
        .unwrap();
    // Attach only starts the transition; the metadata service must not show the ENI yet.
    let after = cloud
        .describe_network_interface(&eni.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.status, EniStatus::Attaching);
    let md = MetadataClient::new(
        env.cfg.metadata.clone(),
        &backoff::BackoffTable::new(&env.cfg.backoff_override),
    )
    .unwrap();
    assert!(!md.eni_macs().await.unwrap().contains(&eni.mac));

    let in_use = wait_eni_status(
        cloud,
        &eni.id,
        EniStatus::InUse,
        cloud.backoff(backoff::WAIT_ENI_STATUS),
    )
    .await
    .unwrap();
    assert_eq!(in_use.instance_id.as_deref(), Some(INSTANCE));
    assert!(md.eni_macs().await.unwrap().contains(&eni.mac));

    let v4 = cloud.assign_private_ips(&eni.id, 3).await.unwrap();
    assert_eq!(v4.len(), 3);
    let seen = md
        .eni(&eni.mac)
        .await
        .unwrap()
        .expect("metadata knows the ENI");
    assert_eq!(seen.eni_id, eni.id);
    assert_eq!(seen.primary_ip, eni.primary_ip);
    for ip in &v4 {
        assert!(
            seen.private_ipv4s.contains(ip),
            "{ip} missing from metadata {:?}",
            seen.private_ipv4s
        );
    }
    // Gateway is the vSwitch's third-from-last address, as Terway derives it.
    assert_eq!(seen.gateway.octets()[3], 253);

    cloud.unassign_private_ips(&eni.id, &v4[..2]).await.unwrap();
    // Unassigning again is success (InvalidIp.IpUnassigned), as in Terway.
    cloud.unassign_private_ips(&eni.id, &v4[..2]).await.unwrap();
    let now = cloud
        .describe_network_interface(&eni.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.private_ips.len(), 3 + 3 - 2);

    cloud
        .detach_network_interface(&eni.id, INSTANCE)
        .await
        .unwrap();
    wait_eni_status(
        cloud,
        &eni.id,
        EniStatus::Available,
        cloud.backoff(backoff::WAIT_ENI_STATUS),
    )
    .await
    .unwrap();
    cloud.delete_network_interface(&eni.id).await.unwrap();
    wait_eni_deleted(cloud, &eni.id, cloud.backoff(backoff::ENI_DELETE_CONFIRM))
        .await
        .unwrap();
    assert!(cloud
        .describe_network_interface(&eni.id)
        .await
        .unwrap()
        .is_none());
    // Releasing what is already gone is success.
    cloud.delete_network_interface(&eni.id).await.unwrap();
    cloud
        .detach_network_interface(&eni.id, INSTANCE)
        .await
        .unwrap();
    cloud.unassign_private_ips(&eni.id, &v4[2..]).await.unwrap();
    assert!(!env.emu.state().enis.contains_key(&eni.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_assign_and_unassign() {
    let env = start_with(
        |c| {
            c.vpc.ipv6_cidr = Some("2408:4000:100::/56".parse().unwrap());
            c.vswitches[0].ipv6_cidr = Some("2408:4000:100:1::/64".parse().unwrap());
        },
        |_| {},
    );
    let cloud = &env.cloud;
    let mut req = eni_request(&suffix(), 0);
    req.ipv6_count = 1;
    let eni = cloud.create_network_interface(&req).await.unwrap();
    assert_eq!(eni.ipv6_addresses.len(), 1);
    let v6 = cloud.assign_ipv6_addresses(&eni.id, 2).await.unwrap();
    assert_eq!(v6.len(), 2);
    assert!(v6.iter().all(|a| a.segments()[0] == 0x2408));
    cloud.unassign_ipv6_addresses(&eni.id, &v6).await.unwrap();
    let now = cloud
        .describe_network_interface(&eni.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.ipv6_addresses, eni.ipv6_addresses);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_filters_catalogue_vswitches_and_routes() {
    let env = start();
    let cloud = &env.cloud;
    let (tag_a, tag_b) = (suffix(), suffix());
    let a = cloud
        .create_network_interface(&eni_request(&tag_a, 0))
        .await
        .unwrap();
    let mut trunk_req = eni_request(&tag_b, 0);
    trunk_req.trunk = true;
    let b = cloud.create_network_interface(&trunk_req).await.unwrap();
    assert_eq!(b.eni_type, EniType::Trunk);

    let by_tag = |t: &str| EniFilter {
        tags: BTreeMap::from([("test".to_string(), t.to_string())]),
        ..Default::default()
    };
    let found = cloud
        .describe_network_interfaces(&by_tag(&tag_a))
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec![a.id.as_str()]
    );
    let ids = EniFilter {
        eni_ids: vec![a.id.clone(), b.id.clone()],
        ..Default::default()
    };
    assert_eq!(
        cloud.describe_network_interfaces(&ids).await.unwrap().len(),
        2
    );
    let trunks = EniFilter {
        eni_type: Some(EniType::Trunk),
        ..Default::default()
    };
    assert_eq!(
        cloud
            .describe_network_interfaces(&trunks)
            .await
            .unwrap()
            .len(),
        1
    );

    cloud
        .attach_network_interface(&a.id, INSTANCE, None)
        .await
        .unwrap();
    wait_eni_status(
        cloud,
        &a.id,
        EniStatus::InUse,
        cloud.backoff(backoff::WAIT_ENI_STATUS),
    )
    .await
    .unwrap();
    let on_node = EniFilter {
        instance_id: Some(INSTANCE.into()),
        status: Some(EniStatus::InUse),
        ..Default::default()
    };
    let attached = cloud.describe_network_interfaces(&on_node).await.unwrap();
    assert!(attached.iter().any(|e| e.id == a.id));
    assert!(attached.iter().any(|e| e.eni_type == EniType::Primary));
    assert!(!attached.iter().any(|e| e.id == b.id));

    let types = cloud
        .describe_instance_types(&["ecs.g7.4xlarge".to_string(), "ecs.g6.large".to_string()])
        .await
        .unwrap();
    let g7 = types
        .iter()
        .find(|t| t.instance_type == "ecs.g7.4xlarge")
        .expect("g7.4xlarge in catalogue");
    assert_eq!(
        (
            g7.eni_quantity,
            g7.eni_private_ip_quantity,
            g7.trunk_supported
        ),
        (8, 30, true)
    );
    assert!(types.iter().any(|t| t.instance_type == "ecs.g6.large"));

    let vsw = cloud.describe_vswitches(&[VSW.to_string()]).await.unwrap();
    assert_eq!(vsw.len(), 1);
    assert_eq!(vsw[0].cidr.to_string(), "10.128.0.0/20");
    assert!(vsw[0].available_ip_count > 4000);

    let table = env.emu.state().vpc.route_table_id;
    let dst: ipnet::Ipv4Net = "172.20.1.0/24".parse().unwrap();
    cloud
        .create_route_entry(&table, dst, INSTANCE)
        .await
        .unwrap();
    let routes = cloud.describe_route_entries(&table).await.unwrap();
    let r = routes
        .iter()
        .find(|r| r.destination_cidr == dst)
        .expect("route listed");
    assert_eq!(r.next_hop_id, INSTANCE);
    cloud
        .delete_route_entry(&table, dst, INSTANCE)
        .await
        .unwrap();
    assert!(!cloud
        .describe_route_entries(&table)
        .await
        .unwrap()
        .iter()
        .any(|r| r.destination_cidr == dst));
    // Deleting a route that is gone is success; a missing route *table* is not.
    cloud
        .delete_route_entry(&table, dst, INSTANCE)
        .await
        .unwrap();
    assert!(cloud
        .delete_route_entry("vtb-doesnotexist", dst, INSTANCE)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_hmac_sha1_signing_is_accepted() {
    let env = start_with(|_| {}, |c| c.signature = SignatureMethod::RpcHmacSha1);
    let eni = env
        .cloud
        .create_network_interface(&eni_request(&suffix(), 1))
        .await
        .unwrap();
    assert!(env
        .cloud
        .describe_network_interface(&eni.id)
        .await
        .unwrap()
        .is_some());
    env.cloud.delete_network_interface(&eni.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_identity_and_ram_role_credentials() {
    let env = start();
    let md = MetadataClient::new(
        env.cfg.metadata.clone(),
        &backoff::BackoffTable::new(&env.cfg.backoff_override),
    )
    .unwrap();
    let id = md.instance().await.unwrap();
    assert_eq!(id.instance_id, INSTANCE);
    assert_eq!(id.instance_type, "ecs.g7.4xlarge");
    assert_eq!(id.region_id, env.emu.region_id());
    assert_eq!(id.vswitch_id, VSW);
    let macs = md.eni_macs().await.unwrap();
    assert_eq!(macs, vec![id.primary_mac.clone()]);
    let primary = md.eni(&id.primary_mac).await.unwrap().unwrap();
    assert_eq!(primary.vswitch_cidr.to_string(), "10.128.0.0/20");
    assert!(md.eni("00:16:3e:ff:ff:ff").await.unwrap().is_none());

    // No AccessKey anywhere: the chain falls through to the instance RAM role (STS token signed as
    // x-acs-security-token), and the emulator accepts it.
    let mut cfg = env.cfg.clone();
    cfg.credentials = terway_cloud::CredentialsConfig {
        ignore_env: true,
        credentials_file: Some("/nonexistent/credentials".into()),
        ..Default::default()
    };
    let cloud = terway_cloud::AlibabaCloud::new(cfg).unwrap();
    let vsw = cloud.describe_vswitches(&[VSW.to_string()]).await.unwrap();
    assert_eq!(vsw.len(), 1);
    let calls = env.emu.calls();
    let last = calls.last().unwrap();
    assert_eq!(last.code, "OK");
    assert!(
        !last.access_key_id.is_empty() && last.access_key_id != env.emu.access_key().id,
        "signed with {}",
        last.access_key_id
    );
}

#[tokio::test]
async fn describe_security_groups_chunks_ids_and_follows_pages() {
    // 130 groups: the ids go out as two JSON lists (100 + 30 + the unknown one) and the first list
    // answers in two pages of at most 50.
    let names: Vec<String> = (0..130).map(|i| format!("sg-chunk{i:03}")).collect();
    let groups = names.clone();
    let env =
        start_with(
            move |c| {
                c.security_groups.extend(groups.iter().map(|id| {
                    terway_emulator::SecurityGroupConfig {
                        id: id.clone(),
                        name: format!("name-{id}"),
                        open: false,
                    }
                }))
            },
            |_| {},
        );
    let mut ask = names.clone();
    ask.push("sg-missing".into());
    let mut got = env.cloud.describe_security_groups(&ask).await.unwrap();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        got.iter().map(|g| g.id.clone()).collect::<Vec<_>>(),
        names,
        "every existing group once, the unknown one absent"
    );
    assert!(got
        .iter()
        .all(|g| g.name == format!("name-{}", g.id) && g.vpc_id == env.emu.state().vpc.id));
    let calls = env
        .emu
        .calls()
        .into_iter()
        .filter(|c| c.action == "DescribeSecurityGroups")
        .count();
    assert_eq!(calls, 3, "100 ids answered in 2 pages, then 31 ids in 1");
}

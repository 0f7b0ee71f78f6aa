//! Every error code the pool acts on, produced by the emulator and classified by the client; the
//! retryable ones (conflict) absorbed, the fatal ones (auth) not retried.

mod common;

use common::*;
use terway_cloud::backoff;
use terway_cloud::wait::wait_eni_status;
use terway_cloud::{AlibabaCloud, Cloud, CloudError, EniStatus};
use terway_emulator::{InstanceConfig, VSwitchConfig};

fn calls_of(env: &Env, action: &str) -> Vec<terway_emulator::CallRecord> {
    env.emu
        .calls()
        .into_iter()
        .filter(|c| c.action == action)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eni_per_instance_limit() {
    let small = "i-small0000000000000001";
    let env = start_with(
        |c| {
            c.instances.push(InstanceConfig {
                id: small.into(),
                instance_type: "ecs.g6.large".into(), // 2 ENIs: the primary + one
                vswitch_id: VSW.into(),
                zone_id: None,
                primary_mac: None,
                primary_ip: None,
                ram_role: None,
                hostname: None,
            })
        },
        |_| {},
    );
    let cloud = &env.cloud;
    let tag = suffix();
    let first = cloud
        .create_network_interface(&eni_request(&tag, 0))
        .await
        .unwrap();
    let second = cloud
        .create_network_interface(&eni_request(&tag, 0))
        .await
        .unwrap();
    cloud
        .attach_network_interface(&first.id, small, None)
        .await
        .unwrap();
    let err = cloud
        .attach_network_interface(&second.id, small, None)
        .await
        .unwrap_err();
    match &err {
        CloudError::EniLimitExceeded {
            instance_id, code, ..
        } => {
            assert_eq!(instance_id, small);
            assert_eq!(code, "EniPerInstanceLimitExceeded");
        }
        other => panic!("expected EniLimitExceeded, got {other:?}"),
    }
    assert!(err.to_string().contains(small));
    assert_eq!(
        calls_of(&env, "AttachNetworkInterface").len(),
        2,
        "a quota error is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_count_exceeded_and_vswitch_exhaustion() {
    let tiny = "vsw-tiny00000000000000001";
    let env = start_with(
        |c| {
            c.vswitches.push(VSwitchConfig {
                id: tiny.into(),
                zone_id: "cn-hangzhou-i".into(),
                cidr: "10.128.255.0/29".parse().unwrap(), // 8 addresses, 4 reserved
                ipv6_cidr: None,
            })
        },
        |_| {},
    );
    let cloud = &env.cloud;
    // Per-ENI quota: g7.4xlarge allows 30 IPv4 per ENI.
    let eni = cloud
        .create_network_interface(&eni_request(&suffix(), 0))
        .await
        .unwrap();
    cloud
        .attach_network_interface(&eni.id, INSTANCE, None)
        .await
        .unwrap();
    wait_eni_status(
        cloud,
        &eni.id,
        EniStatus::InUse,
        cloud.backoff(backoff::WAIT_ENI_STATUS),
    )
    .await
    .unwrap();
    cloud.assign_private_ips(&eni.id, 29).await.unwrap();
    let err = cloud.assign_private_ips(&eni.id, 1).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::IpCountExceeded { eni_id, .. } if *eni_id == eni.id),
        "{err:?}"
    );

    // vSwitch exhaustion names the vSwitch.
    let mut req = eni_request(&suffix(), 0);
    req.vswitch_id = tiny.into();
    let mut made = Vec::new();
    let err = loop {
        match cloud.create_network_interface(&req).await {
            Ok(e) => made.push(e.id),
            Err(e) => break e,
        }
        assert!(made.len() <= 8, "a /29 cannot hold {} ENIs", made.len());
    };
    assert_eq!(made.len(), 4, "a /29 has 8 - 4 reserved addresses");
    match &err {
        CloudError::IpNotEnough {
            vswitch_id, code, ..
        } => {
            assert_eq!(vswitch_id, tiny);
            assert_eq!(code, "InvalidVSwitchId.IpNotEnough");
        }
        other => panic!("expected IpNotEnough, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_state_and_not_found() {
    let env = start();
    let cloud = &env.cloud;
    let eni = cloud
        .create_network_interface(&eni_request(&suffix(), 0))
        .await
        .unwrap();
    cloud
        .attach_network_interface(&eni.id, INSTANCE, None)
        .await
        .unwrap();
    wait_eni_status(
        cloud,
        &eni.id,
        EniStatus::InUse,
        cloud.backoff(backoff::WAIT_ENI_STATUS),
    )
    .await
    .unwrap();
    // Delete while InUse.
    let err = cloud.delete_network_interface(&eni.id).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::InvalidEniState { eni_id, .. } if *eni_id == eni.id),
        "{err:?}"
    );
    // Attaching again to the same instance is already done: success.
    cloud
        .attach_network_interface(&eni.id, INSTANCE, None)
        .await
        .unwrap();
    // Unknown ENI.
    let err = cloud
        .attach_network_interface("eni-doesnotexist00000", INSTANCE, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::NotFound { code, .. } if code == "InvalidEniId.NotFound"),
        "{err:?}"
    );
    assert!(cloud
        .describe_network_interface("eni-doesnotexist00000")
        .await
        .unwrap()
        .is_none());
    let err = cloud
        .assign_private_ips("eni-doesnotexist00000", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::NotFound { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_during_attach_is_retried_until_it_clears() {
    let env = start_with(
        |c| {
            c.delays.attach_min_ms = 1000;
            c.delays.attach_max_ms = 1000;
        },
        |_| {},
    );
    let cloud = &env.cloud;
    let eni = cloud
        .create_network_interface(&eni_request(&suffix(), 0))
        .await
        .unwrap();
    cloud
        .attach_network_interface(&eni.id, INSTANCE, None)
        .await
        .unwrap();
    // Assigning while Attaching answers Operation.Conflict; the client retries on eni_ip_ops.
    let ips = cloud.assign_private_ips(&eni.id, 2).await.unwrap();
    assert_eq!(ips.len(), 2);
    let assigns = calls_of(&env, "AssignPrivateIpAddresses");
    assert!(
        assigns.iter().any(|c| c.code == "Operation.Conflict"),
        "{assigns:?}"
    );
    assert_eq!(assigns.last().unwrap().code, "OK");
    let m = &cloud.metrics()["AssignPrivateIpAddresses"];
    assert!(
        m.retries >= 1 && m.calls == 1 && m.failed_calls == 0,
        "{m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_region_fail_fast() {
    let env = start();
    let mut cfg = env.cfg.clone();
    cfg.credentials.access_key_secret = Some("wrong-secret".into());
    let bad = AlibabaCloud::new(cfg).unwrap();
    let err = bad
        .describe_vswitches(&[VSW.to_string()])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::Auth { code, .. } if code == "SignatureDoesNotMatch"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(
        calls_of(&env, "DescribeVSwitches").len(),
        1,
        "auth errors are not retried"
    );

    let mut cfg = env.cfg.clone();
    cfg.credentials.access_key_id = Some("LTAIUNKNOWN".into());
    let unknown = AlibabaCloud::new(cfg).unwrap();
    let err = unknown
        .describe_vswitches(&[VSW.to_string()])
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::Auth { .. }), "{err:?}");

    // A wrong region must never read as "ENI already deleted".
    let mut cfg = env.cfg.clone();
    cfg.region = "cn-nowhere".into();
    let lost = AlibabaCloud::new(cfg).unwrap();
    let err = lost
        .delete_network_interface("eni-whatever000000000")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::Api { code, .. } if code == "InvalidRegionId.NotFound"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_client_token_with_other_parameters_is_idempotent_failed() {
    // The client never does this itself (one token per logical call); drive the transport directly
    // to prove the classification: IdempotentFailed is a plain, non-retryable API error.
    use terway_cloud::classify::CallContext;
    use terway_cloud::http::{RpcRequest, Transport};
    use terway_cloud::{Credential, Product};
    let env = start();
    let transport = Transport::new(&env.cfg).unwrap();
    let ak = env.emu.access_key();
    let cred = Credential {
        access_key_id: ak.id,
        access_key_secret: ak.secret,
        security_token: None,
        expiration: None,
    };
    let params = |count: &str| -> Vec<(String, String)> {
        [
            ("RegionId", env.emu.region_id()),
            ("VSwitchId", VSW.to_string()),
            ("SecurityGroupIds.1", "sg-1".to_string()),
            ("SecondaryPrivateIpAddressCount", count.to_string()),
            ("ClientToken", "token-reused-on-purpose".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    let (p1, p2) = (params("1"), params("2"));
    let send = |p| RpcRequest {
        action: "CreateNetworkInterface",
        product: Product::Ecs,
        params: p,
    };
    let first = transport
        .send(&send(&p1), &cred, &CallContext::default())
        .await
        .unwrap();
    let replay = transport
        .send(&send(&p1), &cred, &CallContext::default())
        .await
        .unwrap();
    assert_eq!(
        first["NetworkInterfaceId"], replay["NetworkInterfaceId"],
        "same token, same request: same ENI"
    );
    let err = transport
        .send(&send(&p2), &cred, &CallContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::Api { code, .. } if code == "IdempotentFailed"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_count_exceeded() {
    let env = start_with(
        |c| {
            c.vpc.ipv6_cidr = Some("2408:4000:100::/56".parse().unwrap());
            c.vswitches[0].ipv6_cidr = Some("2408:4000:100:1::/64".parse().unwrap());
            c.unattached_eni_ip_limit = 4;
        },
        |_| {},
    );
    let eni = env
        .cloud
        .create_network_interface(&eni_request(&suffix(), 0))
        .await
        .unwrap();
    env.cloud.assign_ipv6_addresses(&eni.id, 4).await.unwrap();
    let err = env
        .cloud
        .assign_ipv6_addresses(&eni.id, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::IpCountExceeded { code, eni_id, .. } if code == "InvalidOperation.Ipv6CountExceeded" && *eni_id == eni.id),
        "{err:?}"
    );
}

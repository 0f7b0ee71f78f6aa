//! Security groups over HTTP: create, describe (by JSON id list, paged, unknown ids left out), and
//! delete refused while an ENI is in the group.

mod common;

use common::{fast_config, start, vswitch, Api};

#[tokio::test]
async fn create_describe_and_delete_security_groups() {
    let cfg = fast_config();
    let vpc = cfg.vpc.id.clone();
    let vsw = vswitch(&cfg);
    let emu = start(cfg);
    let api = Api::new(&emu);

    api.ecs("CreateSecurityGroup", &[("SecurityGroupName", "web")])
        .await
        .expect_err(400, "MissingParameter");
    api.ecs(
        "CreateSecurityGroup",
        &[("VpcId", "vpc-other"), ("SecurityGroupName", "web")],
    )
    .await
    .expect_err(404, "InvalidVpcId.NotFound");
    let created = api
        .ecs(
            "CreateSecurityGroup",
            &[("VpcId", &vpc), ("SecurityGroupName", "web")],
        )
        .await
        .ok();
    let sg = created["SecurityGroupId"].as_str().expect("id").to_string();
    assert!(sg.starts_with("sg-"), "{sg}");

    let ids = serde_json::to_string(&[
        sg.as_str(),
        "sg-nonexistent",
        terway_emulator::DEFAULT_SECURITY_GROUP,
    ])
    .expect("json");
    let found = api
        .ecs("DescribeSecurityGroups", &[("SecurityGroupIds", &ids)])
        .await
        .ok();
    let mut listed: Vec<&str> = found["SecurityGroups"]["SecurityGroup"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|g| g["SecurityGroupId"].as_str())
        .collect();
    listed.sort_unstable();
    let mut want = vec![sg.as_str(), terway_emulator::DEFAULT_SECURITY_GROUP];
    want.sort_unstable();
    assert_eq!(listed, want, "unknown ids are left out, not an error");
    assert_eq!(found["TotalCount"], 2);

    // An ENI in the group keeps it from being deleted.
    let eni = api
        .ecs(
            "CreateNetworkInterface",
            &[("VSwitchId", &vsw), ("SecurityGroupId", &sg)],
        )
        .await
        .ok()["NetworkInterfaceId"]
        .as_str()
        .expect("eni")
        .to_string();
    api.ecs("DeleteSecurityGroup", &[("SecurityGroupId", &sg)])
        .await
        .expect_err(403, "DependencyViolation");
    api.ecs("DeleteNetworkInterface", &[("NetworkInterfaceId", &eni)])
        .await
        .ok();
    // Deletion of an Available ENI completes asynchronously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = api
            .ecs("DeleteSecurityGroup", &[("SecurityGroupId", &sg)])
            .await;
        if answer.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "group still in use: {}",
            answer.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    api.ecs("DeleteSecurityGroup", &[("SecurityGroupId", &sg)])
        .await
        .expect_err(404, "InvalidSecurityGroupId.NotFound");
}

#[tokio::test]
async fn describe_pages_by_number() {
    let mut cfg = fast_config();
    for i in 0..12 {
        cfg.security_groups
            .push(terway_emulator::SecurityGroupConfig {
                id: format!("sg-page{i:02}"),
                name: String::new(),
                open: false,
            });
    }
    let emu = start(cfg);
    let api = Api::new(&emu);
    let first = api
        .ecs("DescribeSecurityGroups", &[("PageSize", "10")])
        .await
        .ok();
    let second = api
        .ecs(
            "DescribeSecurityGroups",
            &[("PageSize", "10"), ("PageNumber", "2")],
        )
        .await
        .ok();
    let count = |v: &serde_json::Value| {
        v["SecurityGroups"]["SecurityGroup"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!((count(&first), count(&second)), (10, 3));
    assert_eq!(first["TotalCount"], 13);
    api.ecs("DescribeSecurityGroups", &[("PageSize", "51")])
        .await
        .expect_err(400, "InvalidParameter");
}

#[tokio::test]
async fn rules_are_authorized_described_and_revoked_with_the_real_error_codes() {
    let cfg = fast_config();
    let vpc = cfg.vpc.id.clone();
    let emu = start(cfg);
    let api = Api::new(&emu);
    let sg = api
        .ecs("CreateSecurityGroup", &[("VpcId", &vpc)])
        .await
        .ok()["SecurityGroupId"]
        .as_str()
        .expect("id")
        .to_string();
    let drop80 = [
        ("SecurityGroupId", sg.as_str()),
        ("IpProtocol", "TCP"),
        ("PortRange", "80/80"),
        ("SourceCidrIp", "0.0.0.0/0"),
        ("Policy", "drop"),
        ("Priority", "1"),
    ];
    api.ecs("AuthorizeSecurityGroup", &drop80).await.ok();
    // The same rule twice is one rule.
    api.ecs("AuthorizeSecurityGroup", &drop80).await.ok();
    let attr = api
        .ecs(
            "DescribeSecurityGroupAttribute",
            &[("SecurityGroupId", &sg)],
        )
        .await
        .ok();
    let perms = attr["Permissions"]["Permission"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(perms.len(), 1, "{attr}");
    assert_eq!(perms[0]["IpProtocol"], "TCP");
    assert_eq!(perms[0]["PortRange"], "80/80");
    assert_eq!(perms[0]["Policy"], "Drop");
    assert_eq!(perms[0]["Direction"], "ingress");
    assert_eq!(attr["InnerAccessPolicy"], "Accept");

    for (params, code) in [
        (
            vec![
                ("IpProtocol", "SCTP"),
                ("PortRange", "1/2"),
                ("SourceCidrIp", "0.0.0.0/0"),
            ],
            "InvalidIpProtocol.Malformed",
        ),
        (
            vec![
                ("IpProtocol", "TCP"),
                ("PortRange", "-1/-1"),
                ("SourceCidrIp", "0.0.0.0/0"),
            ],
            "InvalidPortRange.Malformed",
        ),
        (
            vec![
                ("IpProtocol", "ICMP"),
                ("PortRange", "1/2"),
                ("SourceCidrIp", "0.0.0.0/0"),
            ],
            "InvalidPortRange.Malformed",
        ),
        (
            vec![
                ("IpProtocol", "TCP"),
                ("PortRange", "90/80"),
                ("SourceCidrIp", "0.0.0.0/0"),
            ],
            "InvalidPortRange.Malformed",
        ),
        (
            vec![("IpProtocol", "TCP"), ("PortRange", "80/80")],
            "MissingParameter",
        ),
    ] {
        let mut p = vec![("SecurityGroupId", sg.as_str())];
        p.extend(params);
        api.ecs("AuthorizeSecurityGroup", &p)
            .await
            .expect_err(400, code);
    }
    api.ecs(
        "AuthorizeSecurityGroup",
        &[
            ("SecurityGroupId", "sg-nope"),
            ("IpProtocol", "ALL"),
            ("PortRange", "-1/-1"),
            ("SourceCidrIp", "0.0.0.0/0"),
        ],
    )
    .await
    .expect_err(404, "InvalidSecurityGroupId.NotFound");

    api.ecs("RevokeSecurityGroup", &drop80).await.ok();
    let attr = api
        .ecs(
            "DescribeSecurityGroupAttribute",
            &[("SecurityGroupId", &sg)],
        )
        .await
        .ok();
    assert_eq!(
        attr["Permissions"]["Permission"].as_array().map(Vec::len),
        Some(0),
        "{attr}"
    );
    // Revoking what is not there is no error either.
    api.ecs("RevokeSecurityGroup", &drop80).await.ok();
}

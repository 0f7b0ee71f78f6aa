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

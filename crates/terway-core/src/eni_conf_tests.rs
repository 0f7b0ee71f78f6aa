use super::*;
use serde_json::json;

fn err_of(v: Value) -> String {
    EniConf::from_value(v).unwrap_err().to_string()
}

#[test]
fn defaults_are_terways() {
    let c = EniConf::from_json("{}").unwrap();
    assert_eq!(c, EniConf::default());
    assert_eq!(c.max_pool_size, 5);
    assert_eq!(c.min_pool_size, 0);
    assert_eq!(c.vswitch_selection_policy, VSwitchSelectionPolicy::Random);
    assert_eq!(c.eni_selection_policy, EniSelectionPolicy::MostIps);
    assert_eq!(c.ip_stack, IpStack::Ipv4);
    assert_eq!(
        c.idle_ip_reclaim_interval.as_duration(),
        Duration::from_secs(600)
    );
    assert_eq!(c.idle_ip_reclaim_batch_size, 5);
    assert_eq!(c.idle_ip_reclaim_jitter_factor, 0.1);
    assert_eq!(
        c.ip_pool_sync_period.as_duration(),
        Duration::from_secs(120)
    );
    assert_eq!((c.eni_cap_ratio, c.eni_cap_shift), (1.0, 0));
    assert!(c.enable_patch_pod_ips);
    assert_eq!(c.mode, Mode::Shared);
    assert_eq!(c.ip_reuse_cooldown.as_duration(), Duration::from_secs(30));
    assert_eq!(c.ip_sticky_time.as_duration(), Duration::from_secs(300));
    assert_eq!(
        c.alloc_batch_window.as_duration(),
        Duration::from_millis(300)
    );
    assert_eq!(c.inhibit_eni_limit.as_duration(), Duration::from_secs(60));
    assert_eq!(
        c.inhibit_ip_not_enough.as_duration(),
        Duration::from_secs(600)
    );
    assert_eq!(c.backoffs()["eni_create"].steps, 2);
    assert_eq!(c.rate_limit_for("DescribeNetworkInterfaces").burst, 800);
    assert_eq!(c.creation_tags()["creator"], "terway");
    // The built-in block list is always there; configured entries are added once.
    let p = c.tag_policy();
    assert_eq!(p.block.len(), DEFAULT_ENI_TAG_BLOCK_LIST.len());
    assert!(p.filter.is_empty());
}

#[test]
fn a_full_terway_document_parses() {
    let text = r#"{
      "version": "1", "access_key": "ak", "access_secret": "sk", "credential_path": "/var/addon/token-config",
      "region_id": "cn-hangzhou", "service_cidr": "172.21.0.0/20, fd00::/112",
      "vswitches": {"cn-hangzhou-k": ["vsw-a", "vsw-b"]}, "vswitch_selection_policy": "ordered",
      "eni_selection_policy": "least_ips", "security_group": "sg-1", "security_groups": ["sg-2", "sg-1"],
      "resource_group_id": "rg-1", "eni_tags": {"team": "a"}, "eni_tag_filter": {"env": "prod"},
      "eni_tag_block_list": [{"key": "k", "value": "v"}], "max_pool_size": 10, "min_pool_size": 2,
      "ip_warm_up_size": 3, "idle_ip_reclaim_after": "1h30m", "idle_ip_reclaim_interval": "5m",
      "idle_ip_reclaim_batch_size": 2, "idle_ip_reclaim_jitter_factor": "0.2", "ip_pool_sync_period": "30s",
      "min_eni": 1, "max_eni": 4, "eni_cap_ratio": 0.5, "eni_cap_shift": 1, "prefix": "",
      "ip_stack": "ipv6", "enable_eni_trunking": true, "enable_erdma": false, "ipam_type": "crd",
      "custom_stateful_workload_kinds": ["CloneSet"],
      "backoff_override": {"eni_create": {"Duration": "20s", "Steps": 3}},
      "extra_routes": [{"dst": "100.64.0.0/10"}], "disable_device_plugin": true,
      "kube_client_qps": 20, "kube_client_burst": 30, "rate_limit": {"DescribeVSwitches": 60},
      "enable_patch_pod_ips": false, "enable_ip_prefix": false, "ipv4_prefix_count": 0, "ipv6_prefix_count": 1,
      "enable_eip_pool": "false", "some_future_key": 1,
      "mode": "shared", "ip_reuse_cooldown": "10s", "ip_sticky_time": "1m", "alloc_batch_window": "100ms",
      "inhibit_eni_limit": "30s", "inhibit_ip_not_enough": "5m"
    }"#;
    let c = EniConf::from_json(text).unwrap();
    assert_eq!(c.service_cidr.len(), 2);
    assert_eq!(
        c.vswitch_selection_policy,
        VSwitchSelectionPolicy::Ordered,
        "ordered must mean ordered"
    );
    assert_eq!(c.ip_stack, IpStack::Ipv6, "ipv6 must be accepted");
    assert_eq!(
        c.all_security_groups(),
        vec!["sg-1".to_string(), "sg-2".to_string()]
    );
    assert_eq!(c.idle_reclaim_after(), Some(Duration::from_secs(5400)));
    assert_eq!(c.idle_ip_reclaim_jitter_factor, 0.2);
    assert_eq!(c.backoffs()["eni_create"].duration, Duration::from_secs(20));
    assert_eq!(c.rate_limit_for("DescribeVSwitches").burst, 60);
    assert_eq!(c.unknown_keys(), vec!["some_future_key"]);
    assert_eq!(c.ipam_type, IpamType::Crd);
    // New ENIs carry the filter's tags, so what this node creates it also manages after a restart.
    let created = c.creation_tags();
    assert_eq!(
        (created["team"].as_str(), created["env"].as_str()),
        ("a", "prod")
    );
    let p = c.tag_policy();
    assert_eq!(p.refusal(&created), None);
    assert!(p.block.contains(&("k".to_string(), "v".to_string())));
    assert!(p.block.contains(&(
        "terway.alibabacloud.com/excluded".to_string(),
        "true".to_string()
    )));
    assert!(
        !format!("{c:?}").contains("sk\""),
        "secret must not appear in Debug"
    );
    // Serialising and parsing again gives the same configuration.
    let again = EniConf::from_value(serde_json::to_value(&c).unwrap()).unwrap();
    assert_eq!(again, c);
}

#[test]
fn most_is_a_separate_policy_and_empty_ip_stack_is_ipv4() {
    let c =
        EniConf::from_value(json!({"vswitch_selection_policy": "most", "ip_stack": ""})).unwrap();
    assert_eq!(c.vswitch_selection_policy, VSwitchSelectionPolicy::Most);
    assert_eq!(c.ip_stack, IpStack::Ipv4);
    let c = EniConf::from_value(json!({"ipam_type": ""})).unwrap();
    assert_eq!(c.ipam_type, IpamType::Default);
}

#[test]
fn type_and_enum_errors_name_key_and_value() {
    assert_eq!(
        err_of(json!({"vswitch_selection_policy": "foo"})),
        "eni_conf.vswitch_selection_policy: \"foo\" is not one of random|ordered|most"
    );
    assert_eq!(
        err_of(json!({"ip_stack": "ipv5"})),
        "eni_conf.ip_stack: \"ipv5\" is not one of ipv4|dual|ipv6"
    );
    assert_eq!(
        err_of(json!({"mode": "bridge"})),
        "eni_conf.mode: \"bridge\" is not one of shared|exclusive|vpc-route"
    );
    assert!(err_of(json!({"max_pool_size": "5"}))
        .starts_with("eni_conf.max_pool_size: invalid type: string \"5\""));
    assert!(err_of(json!({"idle_ip_reclaim_interval": "10 minutes"}))
        .starts_with("eni_conf.idle_ip_reclaim_interval: "));
    assert!(err_of(json!({"service_cidr": "172.21.0.0/33"}))
        .contains("\"172.21.0.0/33\" is not a CIDR"));
    assert!(err_of(json!({"idle_ip_reclaim_jitter_factor": "lots"}))
        .starts_with("eni_conf.idle_ip_reclaim_jitter_factor"));
    assert!(
        err_of(json!({"backoff_override": {"eni_ops": {"Stepz": 3}}}))
            .starts_with("eni_conf.backoff_override: ")
    );
    assert!(err_of(json!({"extra_routes": [{"dst": "x"}]})).starts_with("eni_conf.extra_routes: "));
}

#[test]
fn validation_errors() {
    let cases = [
        (json!({"min_pool_size": 6, "max_pool_size": 5}), "eni_conf.min_pool_size: 6 is larger than max_pool_size 5"),
        (json!({"min_eni": 3, "max_eni": 2}), "eni_conf.min_eni: 3 is larger than max_eni 2"),
        (json!({"eni_cap_ratio": 0}), "eni_conf.eni_cap_ratio: 0 must be a number greater than 0"),
        (json!({"idle_ip_reclaim_jitter_factor": -1}), "eni_conf.idle_ip_reclaim_jitter_factor: -1 must be 0 or more"),
        (json!({"ip_pool_sync_period": "0s"}), "eni_conf.ip_pool_sync_period: \"0s\" must be longer than zero"),
        (json!({"ipv6_prefix_count": 2}), "eni_conf.ipv6_prefix_count: 2 must be 0 or 1"),
        (json!({"mode": "vpc-route"}), "eni_conf.pod_cidr: is required when mode is \"vpc-route\""),
        (json!({"mode": "vpc-route", "pod_cidr": "10.0.0.1/32"}), "eni_conf.pod_cidr: 10.0.0.1/32 holds a single address; give a pod CIDR such as /24"),
        (json!({"mode": "exclusive", "enable_eni_trunking": true}), "eni_conf.enable_eni_trunking: true cannot be combined with mode \"exclusive\""),
        (json!({"rate_limit": {"DescribeVSwitches": 0}}), "eni_conf.rate_limit.DescribeVSwitches: 0 must be at least 1 request per minute"),
        (json!({"vswitches": {"z": [""]}}), "eni_conf.vswitches.z: \"\" is not a vSwitch ID"),
        (json!({"idle_ip_reclaim_after": "1m", "idle_ip_reclaim_batch_size": 0}), "eni_conf.idle_ip_reclaim_batch_size: 0 must be at least 1 when idle_ip_reclaim_after is set"),
        (json!({"eni_tags": {"env": "dev"}, "eni_tag_filter": {"env": "prod"}}), "eni_conf.eni_tag_filter.env: \"prod\" contradicts eni_tags.env \"dev\": new ENIs would not match the filter"),
        (json!({"eni_tags": {"terway.alibabacloud.com/excluded": "true"}}), "eni_conf.eni_tag_block_list: terway.alibabacloud.com/excluded=true is also a tag of the ENIs this node creates (eni_tags/eni_tag_filter); it would never use them"),
        (json!({"eni_tag_filter": {"t": "1"}, "eni_tag_block_list": [{"key": "t", "value": "1"}]}), "eni_conf.eni_tag_block_list: t=1 is also a tag of the ENIs this node creates (eni_tags/eni_tag_filter); it would never use them"),
    ];
    for (doc, want) in cases {
        assert_eq!(err_of(doc.clone()), want, "{doc}");
    }
    let sgs: Vec<String> = (0..11).map(|i| format!("sg-{i}")).collect();
    assert!(err_of(json!({"security_groups": sgs})).contains("11 security groups given"));
    assert!(
        err_of(json!({"backoff_override": {"eni_ops": {"Factor": -1}}}))
            .contains("backoff_override.\"eni_ops\".Factor")
    );
    let ok =
        EniConf::from_value(json!({"mode": "vpc-route", "pod_cidr": "10.244.1.0/24"})).unwrap();
    assert_eq!(ok.pod_cidr, Some("10.244.1.0/24".parse().unwrap()));
}

#[test]
fn document_errors() {
    assert!(matches!(
        EniConf::from_json("{"),
        Err(ConfigError::Json {
            what: "eni_conf",
            ..
        })
    ));
    assert_eq!(
        EniConf::from_json("[1]").unwrap_err().to_string(),
        "eni_conf must be a JSON object, got an array"
    );
    assert!(matches!(
        EniConf::from_json_with_override("{}", Some("3")),
        Err(ConfigError::NotObject {
            what: "per-node eni_conf",
            ..
        })
    ));
}

#[test]
fn per_node_override_is_a_merge_patch() {
    let base = r#"{"vswitches":{"z1":["vsw-1"],"z2":["vsw-2"]},"eni_tags":{"a":"1","b":"2"},"max_pool_size":5,"security_groups":["sg-1","sg-2"]}"#;
    let node = r#"{"vswitches":{"z2":null,"z3":["vsw-3"]},"eni_tags":{"b":null,"c":"3"},"max_pool_size":20,"security_groups":["sg-9"]}"#;
    let c = EniConf::from_json_with_override(base, Some(node)).unwrap();
    assert_eq!(c.vswitches.keys().collect::<Vec<_>>(), vec!["z1", "z3"]);
    assert_eq!(
        c.eni_tags,
        BTreeMap::from([("a".into(), "1".into()), ("c".into(), "3".into())])
    );
    assert_eq!(c.max_pool_size, 20);
    assert_eq!(
        c.security_groups,
        vec!["sg-9".to_string()],
        "arrays are replaced, not merged"
    );
    // The merged result is validated as a whole.
    let err = EniConf::from_json_with_override(base, Some(r#"{"min_pool_size":9}"#)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "eni_conf.min_pool_size: 9 is larger than max_pool_size 5"
    );
}

use super::*;

fn sample() -> CniResult {
    let mut r = CniResult::new();
    let host = r.add_interface(Interface {
        name: "cali1234".into(),
        mac: Some("ee:ee:ee:ee:ee:ee".into()),
        ..Default::default()
    });
    let pod = r.add_interface(Interface {
        name: "eth0".into(),
        mac: Some("02:00:00:00:00:01".into()),
        mtu: Some(1500),
        sandbox: Some("/var/run/netns/cni-1".into()),
        socket_path: Some("/run/x.sock".into()),
        pci_id: Some("0000:00:05.0".into()),
    });
    assert_eq!((host, pod), (0, 1));
    r.add_ip(
        "10.0.0.5/24".parse().unwrap(),
        Some("10.0.0.253".parse().unwrap()),
        Some(pod),
    );
    r.add_ip("2408::5/64".parse().unwrap(), None, Some(pod));
    let mut route = Route::new(
        "0.0.0.0/0".parse().unwrap(),
        Some("169.254.1.1".parse().unwrap()),
    );
    route.mtu = Some(1400);
    route.table = Some(1003);
    route.scope = Some(0);
    r.add_route(route);
    r.dns = Dns {
        nameservers: vec!["10.96.0.10".into()],
        domain: None,
        search: vec!["svc".into()],
        options: vec![],
    };
    r
}

#[test]
fn shape_0_3_and_0_4() {
    for v in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
        let j = sample().to_json_for_version(v);
        assert_eq!(
            j,
            json!({
                "cniVersion": v.as_str(),
                "interfaces": [
                    {"name": "cali1234", "mac": "ee:ee:ee:ee:ee:ee"},
                    {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/cni-1"}
                ],
                "ips": [
                    {"version": "4", "address": "10.0.0.5/24", "gateway": "10.0.0.253", "interface": 1},
                    {"version": "6", "address": "2408::5/64", "interface": 1}
                ],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
                "dns": {"nameservers": ["10.96.0.10"], "search": ["svc"]}
            })
        );
    }
}

#[test]
fn shape_1_0() {
    let j = sample().to_json_for_version(CniVersion::V1_0_0);
    assert_eq!(j["cniVersion"], "1.0.0");
    assert!(j["ips"][0].get("version").is_none());
    assert_eq!(j["ips"][0]["gateway"], "10.0.0.253");
    assert!(j["interfaces"][1].get("mtu").is_none());
    assert!(j["interfaces"][1].get("socketPath").is_none());
    assert_eq!(
        j["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "169.254.1.1"})
    );
}

#[test]
fn shape_1_1() {
    let j = sample().to_json_for_version(CniVersion::V1_1_0);
    assert_eq!(
        j["interfaces"][1],
        json!({"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1500, "sandbox": "/var/run/netns/cni-1",
               "socketPath": "/run/x.sock", "pciID": "0000:00:05.0"})
    );
    assert_eq!(
        j["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "169.254.1.1", "mtu": 1400, "table": 1003, "scope": 0})
    );
    assert!(j["ips"][1].get("version").is_none());
}

#[test]
fn empty_result_keeps_dns_object() {
    let j = CniResult::new().to_json_for_version(CniVersion::V1_0_0);
    assert_eq!(j, json!({"cniVersion": "1.0.0", "dns": {}}));
}

#[test]
fn parse_round_trips_every_shape() {
    for v in CniVersion::ALL {
        let j = sample().to_json_for_version(v);
        let back = CniResult::from_json(&j).unwrap();
        let mut want = sample();
        if v < CniVersion::V1_1_0 {
            want.interfaces[1].mtu = None;
            want.interfaces[1].socket_path = None;
            want.interfaces[1].pci_id = None;
            want.routes[0] = Route::new(want.routes[0].dst, want.routes[0].gw);
        }
        assert_eq!(back, want, "{v}");
    }
}

#[test]
fn parse_errors() {
    let bad = [
        json!([]),
        json!({"ips": {}}),
        json!({"ips": [{"address": "10.0.0.5"}]}),
        json!({"ips": [{"address": "10.0.0.5/24", "gateway": "x"}]}),
        json!({"ips": [{"address": "10.0.0.5/24", "interface": 0}]}),
        json!({"ips": [{"address": "10.0.0.5/24", "interface": "0"}]}),
        json!({"ips": [{"version": "6", "address": "10.0.0.5/24"}]}),
        json!({"routes": [{"dst": "0.0.0.0/0", "mtu": -1}]}),
        json!({"routes": [{"dst": "0.0.0.0/0", "scope": 300}]}),
        json!({"routes": [{"gw": "1.1.1.1"}]}),
        json!({"interfaces": [{"mac": "x"}]}),
        json!({"dns": {"nameservers": "x"}}),
    ];
    for b in bad {
        assert!(CniResult::from_json(&b).is_err(), "{b}");
    }
}

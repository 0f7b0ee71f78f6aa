use super::*;
use crate::error::codes;
use serde_json::json;

fn parse(v: Value) -> Result<NetConf, CniError> {
    NetConf::parse(v.to_string().as_bytes())
}

#[test]
fn every_supported_version_parses() {
    for v in CniVersion::ALL {
        let c =
            parse(json!({"cniVersion": v.as_str(), "name": "terway", "type": "terway"})).unwrap();
        assert_eq!(c.cni_version, v);
        assert_eq!(c.plugin_type, "terway");
        assert_eq!(c.runtime_config, RuntimeConfig::default());
    }
}

#[test]
fn conflist_plugin_entry_with_everything() {
    // What libcni hands a plugin of a conflist: name/cniVersion injected, runtimeConfig filled from
    // capabilities, prevResult absent for the first plugin.
    let c = parse(json!({
        "cniVersion": "1.0.0", "name": "terway-chainer", "type": "terway",
        "capabilities": {"bandwidth": true, "portMappings": true},
        "eniip_virtual_type": "veth", "mtu": 1500,
        "ipam": {"type": "host-local"},
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
        "args": {"cni": {"ips": ["10.0.0.9"]}},
        "runtimeConfig": {
            "bandwidth": {"ingressRate": 8000000, "ingressBurst": 16000000, "egressRate": 4000000, "egressBurst": 8000000},
            "portMappings": [
                {"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": "0.0.0.0"},
                {"hostPort": 8443, "containerPort": 443, "protocol": "udp", "hostIP": "::"}
            ],
            "dns": {"servers": ["10.96.0.10"], "searches": ["ns.svc.cluster.local"], "options": ["ndots:5"]},
            "cgroupPath": "/kubepods/pod1"
        }
    }))
    .unwrap();
    assert!(c.has_capability("bandwidth"));
    assert!(!c.has_capability("ips"));
    let bw = c.runtime_config.bandwidth.clone().unwrap();
    assert_eq!(
        (
            bw.ingress_rate,
            bw.ingress_burst,
            bw.egress_rate,
            bw.egress_burst
        ),
        (
            Some(8_000_000),
            Some(16_000_000),
            Some(4_000_000),
            Some(8_000_000)
        )
    );
    let pm = &c.runtime_config.port_mappings;
    assert_eq!(
        pm[0],
        PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Some("tcp".into()),
            host_ip: Some("0.0.0.0".into())
        }
    );
    assert_eq!(
        pm[1],
        PortMapping {
            host_port: 8443,
            container_port: 443,
            protocol: Some("udp".into()),
            host_ip: Some("::".into())
        }
    );
    assert_eq!(
        c.runtime_config.dns.as_ref().unwrap().options,
        vec!["ndots:5".to_string()]
    );
    assert_eq!(c.runtime_config.other["cgroupPath"], "/kubepods/pod1");
    assert_eq!(
        c.dns.as_ref().unwrap().nameservers,
        vec!["10.96.0.10".to_string()]
    );
    assert_eq!(c.ipam.as_ref().unwrap()["type"], "host-local");
    assert_eq!(c.args.as_ref().unwrap()["cni"]["ips"][0], "10.0.0.9");
    // Plugin-specific keys stay reachable.
    assert_eq!(c.get("eniip_virtual_type"), Some(&json!("veth")));
    assert_eq!(c.raw["mtu"], 1500);
}

#[test]
fn prev_result_and_gc_attachments() {
    let c = parse(json!({
        "cniVersion": "1.1.0", "name": "n", "type": "terway",
        "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.253"}]},
        "cni.dev/valid-attachments": [{"containerID": "abc", "ifname": "eth0"}]
    }))
    .unwrap();
    assert_eq!(
        c.prev_result.unwrap().ips[0].address.to_string(),
        "10.0.0.5/24"
    );
    assert_eq!(
        c.valid_attachments.unwrap(),
        vec![ValidAttachment {
            container_id: "abc".into(),
            ifname: "eth0".into()
        }]
    );
}

#[test]
fn error_codes() {
    let cases: Vec<(&[u8], u32)> = vec![
        (b"", codes::DECODE_FAILURE),
        (b"   \n", codes::DECODE_FAILURE),
        (b"{", codes::DECODE_FAILURE),
        (b"[]", codes::DECODE_FAILURE),
        (b"\xff\xfe", codes::DECODE_FAILURE),
        (br#"{"name":"n","type":"t"}"#, codes::INVALID_NETWORK_CONFIG),
        (br#"{"cniVersion":1,"name":"n","type":"t"}"#, codes::DECODE_FAILURE),
        (br#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#, codes::INCOMPATIBLE_VERSION),
        (br#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#, codes::INCOMPATIBLE_VERSION),
        (br#"{"cniVersion":"1.0.0","type":"t"}"#, codes::INVALID_NETWORK_CONFIG),
        (br#"{"cniVersion":"1.0.0","name":"-bad","type":"t"}"#, codes::INVALID_NETWORK_CONFIG),
        (br#"{"cniVersion":"1.0.0","name":"a b","type":"t"}"#, codes::INVALID_NETWORK_CONFIG),
        (br#"{"cniVersion":"1.0.0","name":7,"type":"t"}"#, codes::DECODE_FAILURE),
        (br#"{"cniVersion":"1.0.0","name":"n"}"#, codes::INVALID_NETWORK_CONFIG),
        (br#"{"cniVersion":"1.0.0","name":"n","type":""}"#, codes::INVALID_NETWORK_CONFIG),
        (br#"{"cniVersion":"1.0.0","name":"n","type":[]}"#, codes::DECODE_FAILURE),
        (br#"{"cniVersion":"1.0.0","name":"n","type":"t","capabilities":{"bandwidth":"yes"}}"#, codes::DECODE_FAILURE),
        (br#"{"cniVersion":"1.0.0","name":"n","type":"t","runtimeConfig":{"bandwidth":{"ingressRate":-1}}}"#, codes::DECODE_FAILURE),
        (br#"{"cniVersion":"1.0.0","name":"n","type":"t","runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":1}]}}"#, codes::DECODE_FAILURE),
        (br#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"ips":[{"address":"nope"}]}}"#, codes::DECODE_FAILURE),
        (br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":{}}"#, codes::DECODE_FAILURE),
    ];
    for (input, code) in cases {
        let e = NetConf::parse(input).unwrap_err();
        assert_eq!(
            e.code,
            code,
            "{:?}: {}",
            String::from_utf8_lossy(input),
            e.msg
        );
    }
}

#[test]
fn cni_versions_list_and_legacy_gc_key() {
    let c = parse(
        json!({"cniVersions": ["0.2.0", "1.0.0", "1.1.0", "2.0.0"], "name": "n", "type": "t",
        "cni.dev/attachments": [{"containerID": "x", "ifname": "eth0"}]}),
    )
    .unwrap();
    assert_eq!(c.cni_version, CniVersion::V1_1_0);
    assert_eq!(c.valid_attachments.unwrap()[0].container_id, "x");
    let e = parse(json!({"cniVersions": ["0.1.0"], "name": "n", "type": "t"})).unwrap_err();
    assert_eq!(e.code, codes::INCOMPATIBLE_VERSION);
    let e = parse(json!({"cniVersions": "1.0.0", "name": "n", "type": "t"})).unwrap_err();
    assert_eq!(e.code, codes::DECODE_FAILURE);
    let e = parse(json!({"cniVersions": [1], "name": "n", "type": "t"})).unwrap_err();
    assert_eq!(e.code, codes::DECODE_FAILURE);
}

#[test]
fn sniffing_version_for_errors() {
    assert_eq!(
        sniff_version(br#"{"cniVersion":"0.3.1"}"#),
        Some(CniVersion::V0_3_1)
    );
    assert_eq!(sniff_version(br#"{"cniVersion":"0.1.0"}"#), None);
    assert_eq!(sniff_version(b"garbage"), None);
    assert_eq!(
        sniff_version(br#"{"cniVersions":["0.4.0","1.0.0"]}"#),
        Some(CniVersion::V1_0_0)
    );
}

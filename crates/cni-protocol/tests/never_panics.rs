//! Property tests: random bytes, random JSON and random CNI_ARGS never panic and always yield either
//! a parsed value or a spec error with a known code.

use cni_protocol::{codes, run, CniArgs, CniRequest, NetConf, RawEnv};
use proptest::prelude::*;
use serde_json::{Map, Value};

const SPEC_CODES: [u32; 8] = [1, 2, 3, 4, 5, 6, 7, 11];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("0.3.0"),
            Just("0.4.0"),
            Just("1.0.0"),
            Just("1.1.0"),
            Just("terway"),
            Just("10.0.0.1/24")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("cniVersion".to_string()),
            Just("name".to_string()),
            Just("type".to_string()),
            Just("runtimeConfig".to_string()),
            Just("bandwidth".to_string()),
            Just("portMappings".to_string()),
            Just("HostPort".to_string()),
            Just("prevResult".to_string()),
            Just("ips".to_string()),
            Just("address".to_string()),
            Just("routes".to_string()),
            Just("interfaces".to_string()),
            Just("cni.dev/valid-attachments".to_string()),
            Just("capabilities".to_string()),
            Just("dns".to_string()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A config that is valid at the top level with random content below, to reach the deep parsers.
fn arb_conf() -> impl Strategy<Value = Value> {
    (prop_oneof![Just("0.3.1"), Just("0.4.0"), Just("1.0.0"), Just("1.1.0")], arb_json(), arb_json(), arb_json())
        .prop_map(|(v, rc, prev, extra)| {
            serde_json::json!({"cniVersion": v, "name": "terway", "type": "terway",
                "runtimeConfig": rc, "prevResult": prev, "cni.dev/valid-attachments": extra, "x": extra})
        })
}

fn check_code(code: u32) {
    assert!(SPEC_CODES.contains(&code), "unexpected code {code}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = NetConf::parse(&bytes) { check_code(e.code) }
    }

    #[test]
    fn random_json(v in arb_json()) {
        if let Err(e) = NetConf::parse(v.to_string().as_bytes()) { check_code(e.code) }
    }

    #[test]
    fn random_deep_json(v in arb_conf()) {
        if let Err(e) = NetConf::parse(v.to_string().as_bytes()) { check_code(e.code) }
    }

    #[test]
    fn random_cni_args(s in ".{0,64}") {
        if let Err(e) = CniArgs::parse(&s) { prop_assert_eq!(e.code, codes::INVALID_ENV) }
    }

    #[test]
    fn structured_cni_args(pairs in prop::collection::vec(("[A-Za-z_=;]{0,8}", "[ -~]{0,8}"), 0..6)) {
        let s = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";");
        if let Err(e) = CniArgs::parse(&s) { prop_assert_eq!(e.code, codes::INVALID_ENV) }
    }

    #[test]
    fn run_with_random_env_and_stdin(
        cmd in prop_oneof![
            Just("ADD".to_string()), Just("DEL".to_string()), Just("CHECK".to_string()),
            Just("VERSION".to_string()), Just("STATUS".to_string()), Just("GC".to_string()), ".{0,6}"
        ],
        id in ".{0,10}", netns in ".{0,20}", ifname in ".{0,18}", args in ".{0,30}",
        stdin in prop_oneof![arb_conf().prop_map(|v| v.to_string().into_bytes()), prop::collection::vec(any::<u8>(), 0..64)],
    ) {
        let env = RawEnv::from_pairs([("CNI_COMMAND", cmd), ("CNI_CONTAINERID", id), ("CNI_NETNS", netns),
            ("CNI_IFNAME", ifname), ("CNI_ARGS", args), ("CNI_PATH", "/opt/cni/bin".to_string())]);
        let mut out = Vec::new();
        let code = run(&env, &stdin, &mut out, |req| match req {
            CniRequest::Add(_) => Ok(Some(cni_protocol::CniResult::new())),
            _ => Ok(None),
        });
        if code != 0 {
            let v: Value = serde_json::from_slice(&out).expect("error output is JSON");
            let c = v["code"].as_u64().expect("code") as u32;
            check_code(c);
        } else if !out.is_empty() {
            let _: Value = serde_json::from_slice(&out).expect("success output is JSON");
        }
    }
}

//! Property tests: the configuration and unit parsers never panic on any input, and the formatting
//! of durations and the sizing maths keep their invariants.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Map, Value};
use terway_core::{
    parse_aliyun_bandwidth, parse_k8s_quantity, pool_sizing, tbf_params, EniConf, GoDuration,
    PoolKnobs, TerwayCniConf,
};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            ".{0,10}",
            "[0-9]{1,3}(ms|s|m|h)",
            "(random|ordered|most|ipv6|dual|veth|crd|shared|vpc-route)"
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        let key = prop_oneof![
            Just("max_pool_size"),
            Just("min_pool_size"),
            Just("vswitches"),
            Just("vswitch_selection_policy"),
            Just("ip_stack"),
            Just("service_cidr"),
            Just("backoff_override"),
            Just("rate_limit"),
            Just("idle_ip_reclaim_after"),
            Just("idle_ip_reclaim_jitter_factor"),
            Just("eni_cap_ratio"),
            Just("mode"),
            Just("pod_cidr"),
            Just("extra_routes"),
            Just("mtu"),
            Just("host_stack_cidrs"),
            Just("daemon_timeout"),
            Just("Duration"),
            Just("eni_create"),
        ]
        .prop_map(str::to_string);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn eni_conf_any_json(base in arb_json(), patch in arb_json()) {
        let _ = EniConf::from_value(base.clone());
        let _ = EniConf::from_json_with_override(&base.to_string(), Some(&patch.to_string()));
        let _ = TerwayCniConf::from_value(&base);
    }

    #[test]
    fn eni_conf_any_text(text in ".{0,64}") {
        let _ = EniConf::from_json(&text);
    }

    #[test]
    fn units_any_text(s in ".{0,24}") {
        let _ = parse_aliyun_bandwidth(&s);
        let _ = parse_k8s_quantity(&s);
        let _ = s.parse::<GoDuration>();
    }

    #[test]
    fn units_numberlike_text(s in "[+-]?[0-9]{0,22}(\\.[0-9]{0,6})?(e-?[0-9]{1,3}|[kKMGTPE]i?|[mun]|B|KB|MiB)?") {
        let _ = parse_k8s_quantity(&s);
        let _ = parse_aliyun_bandwidth(&s);
    }

    #[test]
    fn duration_display_round_trips(nanos in 0u64..(400 * 3600 * 1_000_000_000)) {
        let d = GoDuration(Duration::from_nanos(nanos));
        let back: GoDuration = d.to_string().parse().unwrap();
        prop_assert_eq!(back, d);
    }

    #[test]
    fn tbf_invariants(rate in 1u64..u64::MAX / 2, mtu in 68u32..65536) {
        let p = tbf_params(rate, mtu).unwrap();
        prop_assert!(p.burst >= u64::from(mtu) + 1500);
        prop_assert!(p.burst >= rate / 1000);
        prop_assert!(p.limit >= p.burst);
    }

    #[test]
    fn pool_sizing_invariants(adapters in 0u32..64, ips in 0u32..64, ratio in 0.01f64..4.0, shift in -8i32..8,
                              max_eni in 0u32..16, min_eni in 0u32..16, max_pool in 0u32..500, min_pool in 0u32..500) {
        let k = PoolKnobs { eni_cap_ratio: ratio, eni_cap_shift: shift, max_eni, min_eni, max_pool_size: max_pool, min_pool_size: min_pool };
        let s = pool_sizing(adapters, ips, &k);
        prop_assert!(s.min_pool_size <= s.max_pool_size);
        prop_assert!(s.max_pool_size <= s.capacity);
        prop_assert_eq!(s.capacity, s.max_eni * ips);
        if max_eni > 0 { prop_assert!(s.max_eni <= max_eni) }
    }
}

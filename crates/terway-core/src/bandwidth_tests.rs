use super::*;

#[test]
fn aliyun_units_are_binary_bytes() {
    assert_eq!(parse_aliyun_bandwidth("10M").unwrap(), 10 * 1024 * 1024);
    assert_eq!(parse_aliyun_bandwidth("10m").unwrap(), 10 * 1024 * 1024);
    assert_eq!(parse_aliyun_bandwidth("1K").unwrap(), 1024);
    assert_eq!(parse_aliyun_bandwidth("2G").unwrap(), 2 << 30);
    assert_eq!(parse_aliyun_bandwidth("1T").unwrap(), 1 << 40);
    assert_eq!(parse_aliyun_bandwidth(" 4096 ").unwrap(), 4096);
    assert_eq!(parse_aliyun_bandwidth("10MB").unwrap(), 10 << 20);
    assert_eq!(parse_aliyun_bandwidth("10Mib").unwrap(), 10 << 20);
    assert_eq!(parse_aliyun_bandwidth("512b").unwrap(), 512);
    assert_eq!(parse_aliyun_bandwidth("1.5M").unwrap(), 3 << 19);
    assert_eq!(parse_aliyun_bandwidth("0.5k").unwrap(), 512);
}

#[test]
fn aliyun_garbage_and_overflow() {
    for bad in [
        "", "M", "10X", "-1M", "ten", "10MBs", "0", "0M", "0.0001B", "1 M", "1..5M",
    ] {
        assert!(
            matches!(
                parse_aliyun_bandwidth(bad),
                Err(BandwidthError::Invalid { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(
        parse_aliyun_bandwidth("99999999999T"),
        Err(BandwidthError::Overflow("99999999999T".into()))
    );
    assert!(parse_aliyun_bandwidth("99999999999999999999").is_err());
    assert!(matches!(
        parse_aliyun_bandwidth(&"9".repeat(60)),
        Err(BandwidthError::Overflow(_))
    ));
}

#[test]
fn k8s_quantities() {
    assert_eq!(parse_k8s_quantity("10M").unwrap(), 10_000_000);
    assert_eq!(parse_k8s_quantity("1Gi").unwrap(), 1 << 30);
    assert_eq!(parse_k8s_quantity("500k").unwrap(), 500_000);
    assert_eq!(parse_k8s_quantity("1.5M").unwrap(), 1_500_000);
    assert_eq!(parse_k8s_quantity("100").unwrap(), 100);
    assert_eq!(parse_k8s_quantity("1e6").unwrap(), 1_000_000);
    assert_eq!(parse_k8s_quantity("2E").unwrap(), 2_000_000_000_000_000_000);
    assert_eq!(
        parse_k8s_quantity("500m").unwrap(),
        1,
        "rounded up like Quantity.Value()"
    );
    assert_eq!(parse_k8s_quantity("0.5Ki").unwrap(), 512);
    assert_eq!(parse_k8s_quantity("1Ti").unwrap(), 1 << 40);
    assert_eq!(parse_k8s_quantity("0").unwrap(), 0);
    assert_eq!(parse_k8s_quantity("0e30").unwrap(), 0);
}

#[test]
fn k8s_garbage_and_overflow() {
    for bad in ["", "M", "10X", "-1M", "1..2", "10 M", "1e", "1eX", "Mi"] {
        assert!(
            matches!(parse_k8s_quantity(bad), Err(BandwidthError::Invalid { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        parse_k8s_quantity("20E"),
        Err(BandwidthError::Overflow(_))
    ));
    assert!(matches!(
        parse_k8s_quantity("1e40"),
        Err(BandwidthError::Overflow(_))
    ));
    assert!(matches!(
        parse_k8s_quantity("99999999999999999999999999999999999999999"),
        Err(BandwidthError::Overflow(_))
    ));
}

#[test]
fn annotations_precedence_and_runtime_config() {
    let mut ann = BTreeMap::new();
    ann.insert(
        "k8s.aliyun.com/ingress-bandwidth".to_string(),
        "1M".to_string(),
    );
    ann.insert(
        "k8s.aliyun.com/egress-bandwidth".to_string(),
        "2K".to_string(),
    );
    ann.insert(
        "kubernetes.io/egress-bandwidth".to_string(),
        "8M".to_string(),
    );
    let bw = PodBandwidth::from_annotations(&ann).unwrap();
    assert_eq!(bw.ingress, Some(1 << 20));
    assert_eq!(bw.egress, Some(1_000_000));
    let bw = bw.with_runtime_config(Some(80_000), None);
    assert_eq!(bw.ingress, Some(10_000));
    assert_eq!(bw.egress, Some(1_000_000));
    ann.insert(
        "kubernetes.io/ingress-bandwidth".to_string(),
        "lots".to_string(),
    );
    let (key, _) = PodBandwidth::from_annotations(&ann).unwrap_err();
    assert_eq!(key, "kubernetes.io/ingress-bandwidth");
    assert_eq!(
        PodBandwidth::from_annotations(&BTreeMap::new()).unwrap(),
        PodBandwidth::default()
    );
}

#[test]
fn tbf_maths() {
    // 10 MB/s: rate/1000 = 10486 > 1500+1500
    let p = tbf_params(10 * 1024 * 1024, 1500).unwrap();
    assert_eq!(p.burst, 10486);
    assert_eq!(p.limit, 10 * 1024 * 1024 * 25 / 1000 + 10486);
    assert_eq!(p.minburst, 1500);
    assert_eq!(
        p.buffer,
        Duration::from_nanos((10486u128 * 1_000_000_000).div_ceil(10 * 1024 * 1024) as u64)
    );
    // 1 MB/s: the MTU floor dominates
    let p = tbf_params(1_000_000, 1500).unwrap();
    assert_eq!(p.burst, 3000);
    assert_eq!(p.limit, 25_000 + 3000);
    assert_eq!(p.buffer, Duration::from_millis(3));
    assert_eq!(tbf_params(0, 1500), Err(BandwidthError::ZeroRate));
    assert!(tbf_params(u64::MAX, 1500).is_ok());
    assert_eq!(bits_to_bytes(9), 2);
}

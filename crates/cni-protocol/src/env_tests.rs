use super::*;
use crate::error::codes;

fn raw(pairs: &[(&str, &str)]) -> RawEnv {
    RawEnv::from_pairs(pairs.iter().map(|(k, v)| (*k, v.to_string())))
}

const FULL: [(&str, &str); 6] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "f00dbabe0123"),
    ("CNI_NETNS", "/var/run/netns/cni-1234-5678"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=f00dbabe0123;K8S_POD_UID=1-2-3"),
    ("CNI_PATH", "/opt/cni/bin:/usr/libexec/cni"),
];

fn with(cmd: &str, drop: &[&str], set: &[(&str, &str)]) -> RawEnv {
    let mut pairs: Vec<(&str, &str)> = FULL
        .iter()
        .copied()
        .filter(|(k, _)| !drop.contains(k))
        .collect();
    pairs.retain(|(k, _)| *k != "CNI_COMMAND" && !set.iter().any(|(s, _)| s == k));
    pairs.push(("CNI_COMMAND", cmd));
    pairs.extend_from_slice(set);
    raw(&pairs)
}

#[test]
fn full_add_env() {
    let env = CniEnv::parse(&with("ADD", &[], &[])).unwrap();
    assert_eq!(env.command, Command::Add);
    assert_eq!(env.container_id, "f00dbabe0123");
    assert_eq!(
        env.netns,
        Some(NetnsPath::Named {
            path: "/var/run/netns/cni-1234-5678".into(),
            name: "cni-1234-5678".into()
        })
    );
    assert_eq!(env.ifname, "eth0");
    assert_eq!(
        env.cni_path,
        vec![
            PathBuf::from("/opt/cni/bin"),
            PathBuf::from("/usr/libexec/cni")
        ]
    );
    assert!(env.args.ignore_unknown);
    assert_eq!(env.args.pod(), Some(("default", "web-0")));
    assert_eq!(
        env.args.k8s_pod_infra_container_id.as_deref(),
        Some("f00dbabe0123")
    );
    assert_eq!(env.args.k8s_pod_uid.as_deref(), Some("1-2-3"));
}

#[test]
fn netns_forms() {
    assert!(
        matches!(NetnsPath::parse("/run/netns/x").unwrap(), NetnsPath::Named { name, .. } if name == "x")
    );
    assert!(matches!(
        NetnsPath::parse("/proc/4242/ns/net").unwrap(),
        NetnsPath::Process { pid: 4242, .. }
    ));
    assert!(matches!(
        NetnsPath::parse("/var/run/docker/netns/abc").unwrap(),
        NetnsPath::Other(_)
    ));
    assert!(matches!(
        NetnsPath::parse("/proc/self/ns/net").unwrap(),
        NetnsPath::Other(_)
    ));
    assert_eq!(
        NetnsPath::parse("/proc/1/ns/net").unwrap().path(),
        std::path::Path::new("/proc/1/ns/net")
    );
    for bad in ["netns/x", "x", "/run/ne\0ts/x"] {
        assert_eq!(
            NetnsPath::parse(bad).unwrap_err().code,
            codes::INVALID_ENV,
            "{bad:?}"
        );
    }
}

#[test]
fn netns_empty_allowed_on_del_gc_status_version_only() {
    let env = CniEnv::parse(&with("DEL", &["CNI_NETNS"], &[])).unwrap();
    assert_eq!(env.netns, None);
    let env = CniEnv::parse(&with("DEL", &[], &[("CNI_NETNS", "")])).unwrap();
    assert_eq!(env.netns, None);
    for cmd in ["GC", "STATUS"] {
        let env =
            CniEnv::parse(&raw(&[("CNI_COMMAND", cmd), ("CNI_PATH", "/opt/cni/bin")])).unwrap();
        assert_eq!(env.command.as_str(), cmd);
        assert!(env.container_id.is_empty() && env.netns.is_none());
    }
    assert_eq!(
        CniEnv::parse(&raw(&[("CNI_COMMAND", "VERSION")]))
            .unwrap()
            .command,
        Command::Version
    );
    for cmd in ["ADD", "CHECK"] {
        let e = CniEnv::parse(&with(cmd, &["CNI_NETNS"], &[])).unwrap_err();
        assert_eq!(e.code, codes::INVALID_ENV);
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
    }
}

#[test]
fn missing_variables_are_listed_together() {
    let e = CniEnv::parse(&raw(&[("CNI_COMMAND", "ADD")])).unwrap_err();
    assert_eq!(e.code, codes::INVALID_ENV);
    assert_eq!(e.msg, "required environment variables missing for ADD: CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS, CNI_PATH");
    let e = CniEnv::parse(&raw(&[("CNI_COMMAND", "GC")])).unwrap_err();
    assert_eq!(
        e.msg,
        "required environment variables missing for GC: CNI_PATH"
    );
    let e = CniEnv::parse(&raw(&[])).unwrap_err();
    assert_eq!(
        (e.code, e.msg.as_str()),
        (4, "required environment variable CNI_COMMAND is missing")
    );
    let e = CniEnv::parse(&raw(&[("CNI_COMMAND", "add")])).unwrap_err();
    assert_eq!(e.code, codes::INVALID_ENV);
    assert!(e.msg.contains("unknown CNI_COMMAND \"add\""));
}

#[test]
fn container_id_rules() {
    for ok in ["a", "0abc", "abc_def.ghi-jkl", "F00D"] {
        validate_container_id(ok).unwrap();
    }
    for bad in ["", "-abc", "_a", ".a", "a b", "a/b", "ab$", "ä"] {
        assert_eq!(
            validate_container_id(bad).unwrap_err().code,
            codes::INVALID_ENV,
            "{bad:?}"
        );
    }
    let e = CniEnv::parse(&with("DEL", &[], &[("CNI_CONTAINERID", "bad id")])).unwrap_err();
    assert_eq!(e.details, "bad id");
}

#[test]
fn ifname_rules() {
    for ok in ["eth0", "a", "123456789012345", "net1.100"] {
        validate_ifname(ok).unwrap();
    }
    for bad in [
        "",
        ".",
        "..",
        "1234567890123456",
        "a/b",
        "a:b",
        "a b",
        "a\tb",
    ] {
        assert_eq!(
            validate_ifname(bad).unwrap_err().code,
            codes::INVALID_ENV,
            "{bad:?}"
        );
    }
}

#[test]
fn cni_args_rules() {
    let a = CniArgs::parse("").unwrap();
    assert_eq!(a, CniArgs::default());
    let a = CniArgs::parse("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;").unwrap();
    assert_eq!(a.pod(), Some(("ns", "p")));
    assert!(!a.ignore_unknown);
    // Unknown keys need IgnoreUnknown, which may come anywhere in the list.
    let e = CniArgs::parse("FOO=bar;K8S_POD_NAME=p").unwrap_err();
    assert_eq!(e.code, codes::INVALID_ENV);
    assert!(e.msg.contains("unknown keys [\"FOO\"]"), "{}", e.msg);
    let a = CniArgs::parse("FOO=bar;IgnoreUnknown=true").unwrap();
    assert_eq!(a.other.get("FOO").map(String::as_str), Some("bar"));
    for t in ["1", "t", "T", "TRUE", "True", "true"] {
        assert!(
            CniArgs::parse(&format!("IgnoreUnknown={t};X=1"))
                .unwrap()
                .ignore_unknown
        );
    }
    let e = CniArgs::parse("IgnoreUnknown=0;X=1").unwrap_err();
    assert_eq!(e.code, codes::INVALID_ENV);
    let e = CniArgs::parse("IgnoreUnknown=yes").unwrap_err();
    assert!(e.msg.contains("not a boolean"));
    for bad in ["novalue", "=v", "K8S_POD_NAME"] {
        assert_eq!(
            CniArgs::parse(bad).unwrap_err().code,
            codes::INVALID_ENV,
            "{bad:?}"
        );
    }
    // Values may contain '=' (kept whole) and be empty.
    let a = CniArgs::parse("IgnoreUnknown=1;X=a=b;K8S_POD_UID=").unwrap();
    assert_eq!(a.other["X"], "a=b");
    assert_eq!(a.k8s_pod_uid.as_deref(), Some(""));
    assert_eq!(
        CniArgs {
            k8s_pod_namespace: Some(String::new()),
            ..Default::default()
        }
        .pod(),
        None
    );
    let e = CniEnv::parse(&with("ADD", &[], &[("CNI_ARGS", "BAD=1")])).unwrap_err();
    assert_eq!(e.code, codes::INVALID_ENV);
}

#[test]
fn raw_env_ignores_other_variables() {
    let env = RawEnv::from_pairs([("HOME", "/root"), ("CNI_COMMAND", "VERSION")]);
    assert_eq!(env.command.as_deref(), Some("VERSION"));
    assert_eq!(env.path, None);
}

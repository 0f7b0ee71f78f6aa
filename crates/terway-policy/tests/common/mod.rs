//! What the truth-table tests share: the model's addresses and the probe-by-probe comparison of the
//! compiled rules with the oracle.

use std::net::IpAddr;

use terway_policy::gen::{self, NAMESPACES, OUTSIDE, PODS};
use terway_policy::oracle::{self, endpoint};
use terway_policy::{compile, Proto, World};

/// Every address of the model and the outside one.
pub fn addresses() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = (0..NAMESPACES.len())
        .flat_map(|n| (0..PODS.len()).map(move |p| gen::pod_ip(n, p)))
        .collect();
    v.push(OUTSIDE);
    v
}

/// Every probe's verdict (the oracle's) over every pair of addresses, ports 80/81/82 and the three
/// protocols; the first disagreement with the compiled rules, described, as the error.
pub fn table(w: &World) -> Result<Vec<bool>, String> {
    let compiled = compile(w).map_err(|e| e.to_string())?;
    let ips = addresses();
    let mut out = Vec::new();
    for &src in &ips {
        for &dst in &ips {
            if src == dst {
                continue;
            }
            for port in [80u16, 81, 82] {
                for proto in Proto::ALL {
                    let want = oracle::allowed(w, endpoint(w, src), endpoint(w, dst), port, proto);
                    let got = compiled.allows(w, src, dst, port, proto);
                    if want != got {
                        return Err(format!(
                            "{src} -> {dst} {port}/{proto}: oracle says {want}, compiled rules say {got}\ncluster policies: {:#?}\npolicies: {:#?}\ncompiled: {:#?}",
                            w.cluster_policies, w.policies, compiled
                        ));
                    }
                    out.push(want);
                }
            }
        }
    }
    Ok(out)
}

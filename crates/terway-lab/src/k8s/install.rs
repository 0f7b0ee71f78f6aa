//! terway-rs' cluster-wide objects, applied to the lab's API server right after it starts: the CRDs
//! and terwayd's ServiceAccount and RBAC, exactly the files a user applies from `deploy/` (they are
//! compiled in, so the lab cannot drift from them).

use crate::plan::LabPlan;

/// `deploy/rbac.yaml`.
const RBAC: &str = include_str!("../../../../deploy/rbac.yaml");

/// `deploy/crds/*.yaml` (generated from terway-apis).
const CRDS: [&str; 5] = [
    include_str!("../../../../deploy/crds/podnetworkings.network.alibabacloud.com.yaml"),
    include_str!("../../../../deploy/crds/podenis.network.alibabacloud.com.yaml"),
    include_str!("../../../../deploy/crds/networkinterfaces.network.alibabacloud.com.yaml"),
    include_str!("../../../../deploy/crds/nodes.network.alibabacloud.com.yaml"),
    include_str!("../../../../deploy/crds/noderuntimes.network.alibabacloud.com.yaml"),
];

/// The user terwayd authenticates as in the lab: the `terway` ServiceAccount's name, so the RBAC of
/// `deploy/rbac.yaml` is what grants it (and what a DaemonSet's own token would get).
pub const TERWAYD_USER: &str = "system:serviceaccount:kube-system:terway";

/// Groups the API server gives a ServiceAccount of kube-system.
pub const TERWAYD_GROUPS: [&str; 2] = [
    "system:serviceaccounts",
    "system:serviceaccounts:kube-system",
];

/// All of it as one multi-document manifest.
pub fn manifest() -> String {
    let mut docs = vec![RBAC.trim_end()];
    docs.extend(CRDS.iter().map(|c| c.trim_end()));
    docs.join("\n---\n") + "\n"
}

/// `kubectl apply` the manifest, then wait until the API server serves the CRDs.
pub fn apply(plan: &LabPlan) -> anyhow::Result<()> {
    crate::kubectl_cmd::kubectl_stdin(plan, &["apply", "-f", "-"], &manifest())?;
    crate::kubectl_cmd::kubectl(
        plan,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_holds_the_identity_and_every_crd() {
        let m = manifest();
        assert!(m.contains("kind: ServiceAccount") && m.contains("name: terway"));
        assert_eq!(
            m.matches("kind: CustomResourceDefinition").count(),
            5,
            "{m}"
        );
        let (ns, name) = ("kube-system", "terway");
        assert_eq!(TERWAYD_USER, format!("system:serviceaccount:{ns}:{name}"));
    }
}

//! terway-rs' cluster-wide objects for a lab whose terwayd runs as processes (`up --terwayd process`),
//! applied to the API server right after it starts: the CRDs and terwayd's ServiceAccount and RBAC,
//! exactly the files of `deploy/` (compiled in, see [`super::deploy::BASE`]). A DaemonSet lab applies
//! all of deploy/ instead ([`super::deploy`]).

use crate::plan::LabPlan;

/// The user terwayd authenticates as in the lab: the `terway` ServiceAccount's name, so the RBAC of
/// `deploy/rbac.yaml` is what grants it (and what a DaemonSet's own token would get).
pub const TERWAYD_USER: &str = "system:serviceaccount:kube-system:terway";

/// Groups the API server gives a ServiceAccount of kube-system.
pub const TERWAYD_GROUPS: [&str; 2] = [
    "system:serviceaccounts",
    "system:serviceaccounts:kube-system",
];

/// The RBAC and the CRDs of deploy/ as one multi-document manifest.
pub fn manifest() -> String {
    let docs: Vec<&str> = super::deploy::BASE
        .iter()
        .filter(|(path, _)| {
            *path == "rbac.yaml"
                || (path.starts_with("crds/") && !path.ends_with("kustomization.yaml"))
        })
        .map(|(_, text)| text.trim_end())
        .collect();
    docs.join("\n---\n") + "\n"
}

/// `kubectl apply` the manifest, then wait until the API server serves the CRDs.
pub fn apply(plan: &LabPlan) -> anyhow::Result<()> {
    crate::kubectl_cmd::kubectl_stdin(plan, &["apply", "-f", "-"], &manifest())?;
    wait_crds(plan)
}

/// Wait until the API server serves every CRD applied.
pub fn wait_crds(plan: &LabPlan) -> anyhow::Result<()> {
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
            6,
            "{m}"
        );
        let (ns, name) = ("kube-system", "terway");
        assert_eq!(TERWAYD_USER, format!("system:serviceaccount:{ns}:{name}"));
    }
}

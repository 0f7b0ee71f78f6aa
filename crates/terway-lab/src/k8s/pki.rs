//! Per-lab credentials, made with `openssl`: a CA, the API server's serving certificate (for its VPC
//! address and the first service address), the client certificate the API server presents to kubelets,
//! the service-account signing key, and one bearer token per identity (administrator, controller
//! manager, scheduler, each node's kubelet, the lab itself) with the kubeconfigs that carry them.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// One identity of the lab's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name the API server authenticates.
    pub user: String,
    /// Groups of the user.
    pub groups: Vec<String>,
    /// Bearer token.
    pub token: String,
}

/// The identities a lab needs: RBAC's built-in bindings cover the controller manager and scheduler,
/// the Node authorizer covers `system:node:<name>` in `system:nodes`.
pub fn identities(nodes: &[String]) -> Vec<Identity> {
    let mut ids = vec![
        identity("terway-lab-admin", &["system:masters"]),
        identity("system:kube-controller-manager", &[]),
        identity("system:kube-scheduler", &[]),
        identity(
            super::install::TERWAYD_USER,
            &super::install::TERWAYD_GROUPS,
        ),
    ];
    ids.extend(
        nodes
            .iter()
            .map(|n| identity(&format!("system:node:{n}"), &["system:nodes"])),
    );
    ids
}

fn identity(user: &str, groups: &[&str]) -> Identity {
    Identity {
        user: user.to_string(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        token: uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// The API server's `--token-auth-file`: `token,user,uid,"group,group"`.
pub fn token_file(ids: &[Identity]) -> String {
    ids.iter()
        .map(|i| {
            format!(
                "{},{},{},\"{}\"\n",
                i.token,
                i.user,
                i.user,
                i.groups.join(",")
            )
        })
        .collect()
}

/// A kubeconfig for `server` trusting `ca`, authenticating with `token`.
pub fn kubeconfig(server: &str, ca: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n- name: {user:?}\n  user:\n    token: {token}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: {user:?}\n\
         current-context: lab\n",
        ca = ca.display()
    )
}

/// Certificate and key files of a lab.
#[derive(Debug, Clone)]
pub struct Pki {
    /// Directory of the files.
    pub dir: PathBuf,
}

impl Pki {
    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// `<name>.crt`.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }
    /// `<name>.key`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
    /// The token file.
    pub fn tokens(&self) -> PathBuf {
        self.dir.join("tokens.csv")
    }

    /// Make the CA, the serving and kubelet-client certificates and the service-account key pair.
    pub fn generate(dir: &Path, api_addr: Ipv4Addr, service_ip: Ipv4Addr) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        req_with_new_key(
            &pki.dir,
            &["-x509", "-days", "30"],
            "ca.key",
            "ca.crt",
            "/CN=terway-lab-ca",
        )?;
        let san = format!(
            "subjectAltName=IP:{api_addr},IP:{service_ip},IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,\
             DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n"
        );
        pki.signed("apiserver", "/CN=kube-apiserver", &san)?;
        pki.signed(
            "apiserver-kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "extendedKeyUsage=clientAuth\n",
        )?;
        openssl(
            &pki.dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "sa.key",
            ],
        )?;
        openssl(
            &pki.dir,
            &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        )?;
        Ok(pki)
    }

    fn signed(&self, name: &str, subject: &str, extensions: &str) -> anyhow::Result<()> {
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext, extensions)?;
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        req_with_new_key(&self.dir, &[], &key, &csr, subject)?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "30",
                "-extfile",
                &format!("{name}.ext"),
            ],
        )?;
        let _ = std::fs::remove_file(self.dir.join(&csr));
        Ok(())
    }
}

/// `openssl req` with a fresh P-256 key written to `key`: a request in `out`, or with `-x509` among `extra`
/// a self-signed certificate.
fn req_with_new_key(
    dir: &Path,
    extra: &[&str],
    key: &str,
    out: &str,
    subject: &str,
) -> anyhow::Result<()> {
    let mut args = vec!["req"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
        "-subj",
        subject,
    ]);
    openssl(dir, &args)
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("run openssl (install it: apt-get install openssl)")?;
    if !out.status.success() {
        anyhow::bail!(
            "openssl {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_carry_groups_and_nodes_get_the_node_identity() {
        let ids = identities(&["node0".into()]);
        let users: Vec<&str> = ids.iter().map(|i| i.user.as_str()).collect();
        assert_eq!(
            users,
            [
                "terway-lab-admin",
                "system:kube-controller-manager",
                "system:kube-scheduler",
                "system:serviceaccount:kube-system:terway",
                "system:node:node0"
            ]
        );
        let text = token_file(&ids);
        let sa_line = text.lines().nth(3).unwrap_or_default();
        assert!(sa_line.ends_with("\"system:serviceaccounts,system:serviceaccounts:kube-system\""));
        let node_line = text.lines().nth(4).unwrap_or_default();
        assert!(node_line.ends_with(",system:node:node0,system:node:node0,\"system:nodes\""));
        assert_ne!(ids[0].token, ids[1].token);
    }

    #[test]
    fn certificates_are_made_and_the_serving_one_names_the_vpc_address() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(
            dir.path(),
            Ipv4Addr::new(100, 100, 80, 20),
            Ipv4Addr::new(10, 202, 0, 1),
        )
        .unwrap();
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(pki.cert("apiserver"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("IP Address:100.100.80.20"), "{text}");
        assert!(pki.key("sa").exists() && dir.path().join("sa.pub").exists());
    }
}

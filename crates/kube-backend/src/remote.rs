//! [`KubeConnector`]: backends on the remote clusters of Flux's `spec.kubeConfig`, from the
//! kubeconfig a Secret holds.
//!
//! A kubeconfig from a Secret is written by whoever may write Secrets in a namespace, and is
//! read by the controller: as Flux does by default (`--insecure-kubeconfig-exec=false`,
//! `--insecure-kubeconfig-tls=false`), credential plugins (`exec`, `auth-provider`) and
//! `insecure-skip-tls-verify` are refused, and so are file paths (`certificate-authority`,
//! `client-certificate`, `client-key`, `tokenFile`), which would read the controller's own
//! files. Messages never quote the kubeconfig: its parse errors are reduced to a position.

use crate::KubeBackend;
use async_trait::async_trait;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::sync::Arc;
use std::time::Duration;
use trueup_core::traits::{Backend, ClusterConnector, ConnectError};

/// Connects to remote clusters from kubeconfigs (see the module documentation for what a
/// kubeconfig may not ask for).
#[derive(Clone, Debug)]
pub struct KubeConnector {
    connect_timeout: Duration,
    allow_insecure_tls: bool,
}

impl Default for KubeConnector {
    fn default() -> Self {
        KubeConnector {
            connect_timeout: Duration::from_secs(10),
            allow_insecure_tls: false,
        }
    }
}

impl KubeConnector {
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a TCP/TLS connection to a remote API server may take (default 10s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Accepts `insecure-skip-tls-verify: true` (Flux's `--insecure-kubeconfig-tls`).
    pub fn allow_insecure_tls(mut self, allow: bool) -> Self {
        self.allow_insecure_tls = allow;
        self
    }

    /// Parses and checks a kubeconfig: what it may not ask for is an error naming the entry.
    pub fn parse(&self, kubeconfig: &[u8]) -> Result<Kubeconfig, ConnectError> {
        let text = std::str::from_utf8(kubeconfig)
            .map_err(|_| ConnectError::Invalid("the kubeconfig is not UTF-8 text".into()))?;
        // The parse error would quote the text: only say that it is not a kubeconfig.
        let kc = Kubeconfig::from_yaml(text).map_err(|_| {
            ConnectError::Invalid("not a kubeconfig (the YAML does not parse as one)".into())
        })?;
        if kc.clusters.is_empty() {
            return Err(ConnectError::Invalid(
                "not a kubeconfig: it has no clusters".into(),
            ));
        }
        for c in &kc.clusters {
            let Some(cluster) = &c.cluster else { continue };
            let at = format!("cluster '{}'", c.name);
            if cluster.certificate_authority.is_some() {
                return Err(refused(
                    &at,
                    "certificate-authority (a file path; use certificate-authority-data)",
                ));
            }
            if cluster.insecure_skip_tls_verify == Some(true) && !self.allow_insecure_tls {
                return Err(refused(&at, "insecure-skip-tls-verify"));
            }
        }
        for u in &kc.auth_infos {
            let Some(user) = &u.auth_info else { continue };
            let at = format!("user '{}'", u.name);
            if user.exec.is_some() {
                return Err(refused(&at, "exec (credential plugins run local commands)"));
            }
            if user.auth_provider.is_some() {
                return Err(refused(&at, "auth-provider (credential plugins)"));
            }
            for (set, field) in [
                (user.client_certificate.is_some(), "client-certificate"),
                (user.client_key.is_some(), "client-key"),
                (user.token_file.is_some(), "tokenFile"),
            ] {
                if set {
                    return Err(refused(
                        &at,
                        &format!("{field} (a file path; use the -data form or a token)"),
                    ));
                }
            }
        }
        Ok(kc)
    }
}

fn refused(at: &str, what: &str) -> ConnectError {
    ConnectError::Invalid(format!(
        "{at}: {what} is not allowed in a kubeconfig from a Secret"
    ))
}

#[async_trait]
impl ClusterConnector for KubeConnector {
    async fn connect(
        &self,
        kubeconfig: &[u8],
        origin: &str,
    ) -> Result<Arc<dyn Backend>, ConnectError> {
        let kc = self.parse(kubeconfig)?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| {
                // These errors name contexts, clusters, users and URLs, never credentials;
                // parse errors (which quote) were caught above.
                ConnectError::Invalid(format!("unusable kubeconfig: {e}"))
            })?;
        config.connect_timeout = Some(self.connect_timeout);
        config.read_timeout = Some(Duration::from_secs(300));
        let server = config.cluster_url.to_string();
        let server = server.trim_end_matches('/').to_string();
        let backend =
            KubeBackend::from_config(config).map_err(|e| ConnectError::Invalid(format!("{e}")))?;
        // One request to check that the server answers and takes the credentials.
        match tokio::time::timeout(self.connect_timeout, backend.client().apiserver_version()).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(ConnectError::Unreachable {
                    server,
                    source: Box::new(e),
                })
            }
            Err(_) => {
                return Err(ConnectError::Unreachable {
                    server,
                    source: format!("no answer within {:?}", self.connect_timeout).into(),
                })
            }
        }
        tracing::info!(%server, %origin, "connected to a remote cluster");
        Ok(Arc::new(backend))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==";

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n{cluster}users:\n- name: u\n  user:\n{user}contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        )
    }

    fn invalid(r: Result<Kubeconfig, ConnectError>) -> String {
        match r {
            Err(ConnectError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn plugins_files_and_insecure_tls_are_refused_naming_the_entry() {
        let c = KubeConnector::new();
        let ok = kubeconfig(
            &format!("    certificate-authority-data: {CA}\n"),
            "    token: s3cr3t-token\n",
        );
        assert!(c.parse(ok.as_bytes()).is_ok());
        let cases = [
            (
                kubeconfig("", "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}\n"),
                "user 'u': exec (credential plugins run local commands) is not allowed in a kubeconfig from a Secret",
            ),
            (
                kubeconfig("", "    auth-provider: {name: gcp}\n"),
                "user 'u': auth-provider",
            ),
            (
                kubeconfig("", "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n"),
                "user 'u': tokenFile (a file path",
            ),
            (
                kubeconfig("", "    client-key: /etc/key.pem\n"),
                "user 'u': client-key (a file path",
            ),
            (
                kubeconfig("    certificate-authority: /etc/ca.crt\n", ""),
                "cluster 'c': certificate-authority (a file path",
            ),
            (
                kubeconfig("    insecure-skip-tls-verify: true\n", ""),
                "cluster 'c': insecure-skip-tls-verify is not allowed",
            ),
        ];
        for (text, want) in cases {
            let m = invalid(c.parse(text.as_bytes()));
            assert!(m.starts_with(want), "{m}\nwanted: {want}");
        }
        let insecure = kubeconfig("    insecure-skip-tls-verify: true\n", "");
        assert!(KubeConnector::new()
            .allow_insecure_tls(true)
            .parse(insecure.as_bytes())
            .is_ok());
    }

    #[test]
    fn garbage_is_not_quoted() {
        let c = KubeConnector::new();
        for text in [
            "token: hunter2-secret\n- [",
            "clusters: hunter2-secret\n",
            "hunter2-secret",
        ] {
            let m = invalid(c.parse(text.as_bytes()));
            assert!(!m.contains("hunter2"), "{m}");
            assert!(m.starts_with("not a kubeconfig"), "{m}");
        }
        assert_eq!(
            invalid(c.parse(&[0xff, 0xfe, 0x00])),
            "the kubeconfig is not UTF-8 text"
        );
    }
}

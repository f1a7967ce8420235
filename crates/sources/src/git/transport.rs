//! Connecting to a Git server: URL checks, authentication headers, TLS, and a `git://`
//! connection with timeouts.

use base64::Engine as _;
use gix::protocol::transport::client::blocking_io::http;
use gix::protocol::transport::client::blocking_io::Transport;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trueup_core::traits::source::{Credentials, SourceError, SourceErrorKind};

/// The URL schemes trueup speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    Git,
    /// `file://`: not offered by Flux, but handy for embedding and demos (runs `git upload-pack`).
    File,
}

/// `url` with any `user:password@` removed, for messages.
pub fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

/// `text` with the `user:password@` part of every URL in it removed: lower layers quote URLs in
/// their errors, and a URL may carry credentials.
pub fn scrub_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or closing bracket/quote.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || ")]'\"".contains(c))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        out.push_str(
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host),
        );
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Checks the URL and returns its scheme; anything else is an invalid spec (retrying won't help).
pub fn check_url(url: &str) -> Result<(Scheme, gix::Url), SourceError> {
    let shown = display_url(url);
    let invalid = |m: String| SourceError::new(SourceErrorKind::InvalidSpec, m);
    let scheme = match url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()) {
        Some(s) if s == "http" => Scheme::Http,
        Some(s) if s == "https" => Scheme::Https,
        Some(s) if s == "git" => Scheme::Git,
        Some(s) if s == "file" => Scheme::File,
        Some(s) if s == "ssh" => {
            return Err(invalid(format!(
                "unsupported URL '{shown}': ssh is not supported yet, use https with a token"
            )))
        }
        _ => {
            return Err(invalid(format!(
                "unsupported URL '{shown}': the scheme must be http, https, git or file"
            )))
        }
    };
    let parsed = gix::url::parse(gix::bstr::BStr::new(url))
        // The parser's message may quote the URL, credentials included: name ours only.
        .map_err(|_| invalid(format!("invalid URL '{shown}'")))?;
    if scheme != Scheme::File && parsed.host().is_none_or(str::is_empty) {
        return Err(invalid(format!("invalid URL '{shown}': no host")));
    }
    Ok((scheme, parsed))
}

/// What of the Secret a request carries.
#[derive(Clone, Default)]
pub struct Auth {
    /// `Authorization: ...` header lines, sent with every request (pre-emptively, as Flux does,
    /// so an authenticated check is still one round trip).
    pub headers: Vec<String>,
    /// Extra PEM roots from `ca.crt` / `caFile`.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate from `tls.crt` and `tls.key` (mutual TLS over HTTPS).
    pub client_cert: Option<crate::tls::ClientCert>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("headers", &self.headers.len())
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

impl Auth {
    /// Reads the `secretRef` Secret (`secret_name` for messages): basic or bearer auth, and
    /// `ca.crt`, `tls.crt`, `tls.key` for HTTPS.
    pub fn from_credentials(
        creds: Option<&Credentials>,
        secret_name: Option<&str>,
    ) -> Result<Auth, SourceError> {
        let Some(creds) = creds else {
            return Ok(Auth::default());
        };
        let mut auth = Auth::default();
        if let Some(token) = creds.get_str("bearerToken").filter(|t| !t.is_empty()) {
            auth.headers
                .push(format!("Authorization: Bearer {}", token.trim()));
        } else if let Some(user) = creds.get_str("username") {
            let password = creds.get_str("password").unwrap_or_default();
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            auth.headers.push(format!("Authorization: Basic {encoded}"));
        } else if creds.0.contains_key("password") {
            return Err(SourceError::new(
                SourceErrorKind::InvalidSpec,
                "invalid secret: 'password' is set but 'username' is not",
            ));
        }
        if auth.headers.iter().any(|h| h.contains(['\r', '\n'])) {
            return Err(SourceError::new(
                SourceErrorKind::InvalidSpec,
                "invalid secret: credentials contain a newline",
            ));
        }
        let secret = crate::tls::describe_secret(secret_name, "secretRef");
        // `caFile` was read before Flux settled on `ca.crt`; it still is.
        let tls = crate::tls::TlsSecret::from_credentials(Some(creds), &secret, Some(&secret))?;
        auth.ca_pem = tls.ca_pem;
        auth.client_cert = tls.client_cert;
        Ok(auth)
    }
}

/// Options for gix's HTTP transport: our headers, timeouts and TLS.
pub fn http_options(auth: &Auth, timeout: Duration) -> Result<http::Options, SourceError> {
    // Smart HTTP works over HTTP/1.1, the only protocol the config offers.
    let tls = crate::tls::client_config(auth.ca_pem.as_deref(), None, auth.client_cert.as_ref())?;
    let connect_timeout = timeout.min(Duration::from_secs(10));
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(
            move |builder: reqwest::blocking::ClientBuilder| {
                Ok(builder
                    .tls_backend_preconfigured(tls.clone())
                    .connect_timeout(connect_timeout)
                    // Per request: a stalled server cannot hold a reconcile past its timeout.
                    .timeout(timeout))
            },
        )),
        configure_request: None,
    };
    Ok(http::Options {
        extra_headers: auth.headers.clone(),
        connect_timeout: Some(connect_timeout),
        user_agent: Some(concat!("trueup/", env!("CARGO_PKG_VERSION")).to_string()),
        backend: Some(Arc::new(Mutex::new(backend))),
        ..Default::default()
    })
}

/// A `git://` connection whose connect, read and write all time out, unlike gix's own (fixed
/// 5s connect, no read timeout), so that a silent daemon cannot pin a blocking thread.
pub fn git_daemon_transport(
    url: &gix::Url,
    timeout: Duration,
) -> std::io::Result<Box<dyn Transport + Send>> {
    let host = url.host().unwrap_or_default();
    let port = url.port.unwrap_or(9418);
    let addrs: Vec<_> = (host, port).to_socket_addrs()?.collect();
    let mut last_err = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("no address for host {host}"),
    );
    let connect_timeout = timeout.min(Duration::from_secs(10));
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, connect_timeout) {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                stream.set_nodelay(true)?;
                let write = stream.try_clone()?;
                let conn = gix::protocol::transport::client::git::blocking_io::Connection::new(
                    stream,
                    write,
                    gix::protocol::transport::Protocol::V2,
                    url.path.clone(),
                    Some((host.to_string(), url.port)),
                    gix::protocol::transport::client::git::ConnectMode::Daemon,
                    false,
                );
                return Ok(Box::new(conn));
            }
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn display_url_strips_userinfo() {
        assert_eq!(
            display_url("https://u:p@h.example/r.git"),
            "https://h.example/r.git"
        );
        assert_eq!(
            display_url("https://tok@en@h.example:8443/r"),
            "https://h.example:8443/r"
        );
        assert_eq!(display_url("git://h/r"), "git://h/r");
        assert_eq!(display_url("nonsense"), "nonsense");
    }

    #[test]
    fn scrub_removes_userinfo_everywhere() {
        assert_eq!(
            scrub_userinfo(
                "error for url (http://u:pw@h:1/r.git/info/refs?x) and 'https://tok@h2/'"
            ),
            "error for url (http://h:1/r.git/info/refs?x) and 'https://h2/'"
        );
        assert_eq!(scrub_userinfo("no urls here"), "no urls here");
    }

    #[test]
    fn schemes() {
        assert_eq!(check_url("https://h/r").unwrap().0, Scheme::Https);
        assert_eq!(check_url("git://127.0.0.1:9/r").unwrap().0, Scheme::Git);
        for bad in ["ssh://git@h/r", "ftp://h/r", "h:r", "https:///r"] {
            assert_eq!(
                check_url(bad).unwrap_err().kind,
                SourceErrorKind::InvalidSpec,
                "{bad}"
            );
        }
        let e = check_url("ftp://user:s3cret@h/r").unwrap_err();
        assert!(!e.message.contains("s3cret"), "{}", e.message);
    }

    #[test]
    fn auth_headers() {
        let creds = |kv: &[(&str, &str)]| {
            Credentials(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let a = Auth::from_credentials(
            Some(&creds(&[("username", "git"), ("password", "pw")])),
            None,
        )
        .unwrap();
        assert_eq!(a.headers, vec!["Authorization: Basic Z2l0OnB3".to_string()]);
        let a = Auth::from_credentials(Some(&creds(&[("bearerToken", "tok")])), None).unwrap();
        assert_eq!(a.headers, vec!["Authorization: Bearer tok".to_string()]);
        assert!(!format!("{a:?}").contains("tok"));
        assert!(Auth::from_credentials(Some(&creds(&[("password", "x")])), None).is_err());
        assert!(Auth::from_credentials(Some(&creds(&[("ca.crt", "not pem")])), None).is_ok());
        let e =
            Auth::from_credentials(Some(&creds(&[("tls.crt", "x")])), Some("git-tls")).unwrap_err();
        assert!(
            e.message.contains("secret 'git-tls'") && e.message.contains("'tls.key'"),
            "{}",
            e.message
        );
    }
}

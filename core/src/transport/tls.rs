//! TLS for channels and servers: rustls (with the `ring` crypto provider) over any transport,
//! through `futures-rustls`, HTTP/2 negotiated by ALPN.
//!
//! - A channel uses TLS for `https://` targets, and for any other target when its builder has
//!   a [`ClientTlsConfig`] ([`ChannelBuilder::tls`](crate::ChannelBuilder::tls)). The TLS
//!   session runs over whatever the channel's [`Connector`] opens, so TLS works over TCP, Unix
//!   sockets and custom transports alike.
//! - A server with a [`ServerTlsConfig`] ([`ServerBuilder::tls`](crate::ServerBuilder::tls))
//!   runs the TLS handshake on every connection before HTTP/2, within the server's
//!   [handshake timeout](crate::ServerBuilder::handshake_timeout); handlers see the client's
//!   certificates through [`CallContext::peer_certificates`](crate::CallContext::peer_certificates).
//!
//! Certificates and keys are given as PEM ([`Certificate`], [`Identity`]) and checked when the
//! channel or server is built: a malformed one is an INVALID_ARGUMENT status saying which.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_rustls::{TlsAcceptor, TlsConnector};
use http::uri::{Authority, Scheme};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use rustls;

use super::{Address, BoxedIo, Connector, Io, PeerCertificates};
use crate::client::target::Target;
use crate::rt::BoxFuture;
use crate::status::Status;

/// The ALPN protocol ID of HTTP/2 over TLS (RFC 9113 §3.2); gRPC requires it (gRPC's
/// PROTOCOL-HTTP2.md, "Connection").
const ALPN_H2: &[u8] = b"h2";

/// One or more X.509 certificates (PEM, possibly a bundle, or one DER certificate), checked
/// when the channel or server that uses them is built.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Certificate {
    source: Source,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Source {
    Pem(Arc<[u8]>),
    Der(Arc<[u8]>),
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, len) = match &self.source {
            Source::Pem(b) => ("pem", b.len()),
            Source::Der(b) => ("der", b.len()),
        };
        f.debug_struct("Certificate")
            .field(kind, &format_args!("{len} bytes"))
            .finish()
    }
}

impl Certificate {
    /// Certificates in PEM form: every `CERTIFICATE` block in `pem` (a CA bundle works).
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Certificate {
        Certificate {
            source: Source::Pem(pem.as_ref().into()),
        }
    }

    /// One certificate in DER form.
    pub fn from_der(der: impl AsRef<[u8]>) -> Certificate {
        Certificate {
            source: Source::Der(der.as_ref().into()),
        }
    }

    /// Reads a PEM file (see [`Certificate::from_pem`]); the error names the file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> io::Result<Certificate> {
        read(path.as_ref()).map(Certificate::from_pem)
    }

    /// The DER certificates, or a message saying what is wrong (`what` names them).
    fn parse(&self, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
        match &self.source {
            Source::Der(der) => Ok(vec![CertificateDer::from(der.to_vec())]),
            Source::Pem(pem) => {
                let certs = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{what}: malformed PEM: {e}"))?;
                if certs.is_empty() {
                    return Err(format!("{what}: no CERTIFICATE block in the PEM"));
                }
                Ok(certs)
            }
        }
    }
}

/// A certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1), PEM-encoded:
/// what a server presents, or a client for mutual TLS. The key never shows in `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    chain: Certificate,
    key: Arc<[u8]>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A chain and key from PEM text.
    pub fn from_pem(cert_chain_pem: impl AsRef<[u8]>, key_pem: impl AsRef<[u8]>) -> Identity {
        Identity {
            chain: Certificate::from_pem(cert_chain_pem),
            key: key_pem.as_ref().into(),
        }
    }

    /// Reads a chain and key from PEM files; the error names the file.
    pub fn from_pem_files(
        cert_chain_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> io::Result<Identity> {
        let chain = read(cert_chain_path.as_ref())?;
        let key = read(key_path.as_ref())?;
        Ok(Identity::from_pem(chain, key))
    }

    fn parse(
        &self,
        what: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
        let chain = self.chain.parse(&format!("{what} certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                format!("{what} key: no PRIVATE KEY block in the PEM")
            }
            e => format!("{what} key: malformed PEM: {e}"),
        })?;
        Ok((chain, key))
    }
}

fn read(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// TLS settings for a channel: which CAs to trust, the name to verify, and an optional client
/// certificate for mutual TLS. HTTP/2 is always negotiated by ALPN; a server that does not
/// agree to `h2` fails the connection.
#[derive(Clone, Debug, Default)]
pub struct ClientTlsConfig {
    ca: Vec<Certificate>,
    native_roots: Option<bool>,
    server_name: Option<String>,
    identity: Option<Identity>,
    rustls: Option<Arc<ClientConfig>>,
}

/// What a TLS config is compared and hashed by: its settings, and a raw rustls config by
/// identity (the same `Arc`), since rustls configs cannot be compared by value.
macro_rules! eq_and_hash_by_key {
    ($type:ty) => {
        impl PartialEq for $type {
            fn eq(&self, other: &$type) -> bool {
                self.key() == other.key()
            }
        }

        impl Eq for $type {}

        impl std::hash::Hash for $type {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.key().hash(state);
            }
        }
    };
}

eq_and_hash_by_key!(ClientTlsConfig);
eq_and_hash_by_key!(ServerTlsConfig);

impl ClientTlsConfig {
    /// What equality and hashing look at.
    #[expect(
        clippy::type_complexity,
        reason = "a tuple of the fields, used only here"
    )]
    fn key(
        &self,
    ) -> (
        &[Certificate],
        Option<bool>,
        Option<&str>,
        Option<&Identity>,
        Option<*const ClientConfig>,
    ) {
        (
            &self.ca,
            self.native_roots,
            self.server_name.as_deref(),
            self.identity.as_ref(),
            self.rustls.as_ref().map(Arc::as_ptr),
        )
    }

    /// Trusts the system's root certificates (see [`native_roots`](Self::native_roots)), no
    /// client certificate, and verifies the target's host name.
    pub fn new() -> ClientTlsConfig {
        ClientTlsConfig::default()
    }

    /// Trusts the CA certificate(s) in `ca` (may be called again to add more). Once a CA is
    /// given, the system roots are no longer trusted unless [`native_roots(true)`](Self::native_roots).
    pub fn ca_certificate(mut self, ca: Certificate) -> ClientTlsConfig {
        self.ca.push(ca);
        self
    }

    /// Whether to trust the operating system's root certificates, read once per process with
    /// `rustls-native-certs` (on Linux the distribution's bundle, `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` honoured). Default: true when no CA certificate is given.
    pub fn native_roots(mut self, enabled: bool) -> ClientTlsConfig {
        self.native_roots = Some(enabled);
        self
    }

    /// Verifies the server's certificate against `name` (a DNS name or an IP address) instead
    /// of the target's host, sends it as SNI, and uses it as the `:authority` of requests (as
    /// gRPC's `ssl_target_name_override` and the interop client's `--server_host_override`
    /// do).
    pub fn server_name(mut self, name: impl Into<String>) -> ClientTlsConfig {
        self.server_name = Some(name.into());
        self
    }

    /// Presents `identity` when the server asks for a client certificate (mutual TLS).
    pub fn identity(mut self, identity: Identity) -> ClientTlsConfig {
        self.identity = Some(identity);
        self
    }

    /// Uses a complete rustls configuration (custom verifiers, session resumption, key
    /// logging...) instead of the settings above; [`server_name`](Self::server_name) still
    /// applies. Its ALPN list is replaced by `h2`. Build it with a crypto provider explicitly
    /// (`ClientConfig::builder_with_provider`) unless the process has a default one.
    pub fn from_rustls(config: Arc<ClientConfig>) -> ClientTlsConfig {
        ClientTlsConfig {
            rustls: Some(config),
            ..ClientTlsConfig::default()
        }
    }

    /// The rustls configuration these settings describe.
    fn build(&self) -> Result<Arc<ClientConfig>, String> {
        if let Some(config) = &self.rustls {
            let mut config = (**config).clone();
            config.alpn_protocols = vec![ALPN_H2.to_vec()];
            return Ok(Arc::new(config));
        }
        let mut roots = RootCertStore::empty();
        for ca in &self.ca {
            for cert in ca.parse("CA certificate")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("CA certificate: not usable as a trust anchor: {e}"))?;
            }
        }
        if self.native_roots.unwrap_or(self.ca.is_empty()) {
            roots.extend(native_roots()?.roots.iter().cloned());
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS protocol versions: {e}"))?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some(identity) => {
                let (chain, key) = identity.parse("client")?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate and key: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// TLS settings for a server: its certificate chain and key, and optionally the CAs whose
/// client certificates it accepts (mutual TLS). HTTP/2 is offered by ALPN; a client that
/// offers ALPN without `h2` is refused, one that offers no ALPN is served.
#[derive(Clone, Debug)]
pub struct ServerTlsConfig {
    identity: Option<Identity>,
    client_ca: Vec<Certificate>,
    client_auth_optional: bool,
    rustls: Option<Arc<ServerConfig>>,
}

impl ServerTlsConfig {
    /// What equality and hashing look at.
    fn key(
        &self,
    ) -> (
        Option<&Identity>,
        &[Certificate],
        bool,
        Option<*const ServerConfig>,
    ) {
        (
            self.identity.as_ref(),
            &self.client_ca,
            self.client_auth_optional,
            self.rustls.as_ref().map(Arc::as_ptr),
        )
    }

    /// Presents `identity` to clients; asks for no client certificate.
    pub fn new(identity: Identity) -> ServerTlsConfig {
        ServerTlsConfig {
            identity: Some(identity),
            client_ca: Vec::new(),
            client_auth_optional: false,
            rustls: None,
        }
    }

    /// Requires every client to present a certificate issued by a CA in `ca` (may be called
    /// again to add more CAs); see [`client_auth_optional`](Self::client_auth_optional).
    pub fn client_ca_certificate(mut self, ca: Certificate) -> ServerTlsConfig {
        self.client_ca.push(ca);
        self
    }

    /// With client CAs set: `true` also accepts clients that present no certificate (one that
    /// is presented must still verify). Default false: a certificate is required.
    pub fn client_auth_optional(mut self, optional: bool) -> ServerTlsConfig {
        self.client_auth_optional = optional;
        self
    }

    /// Uses a complete rustls configuration instead of the settings above. Its ALPN list is
    /// replaced by `h2`.
    pub fn from_rustls(config: Arc<ServerConfig>) -> ServerTlsConfig {
        ServerTlsConfig {
            identity: None,
            client_ca: Vec::new(),
            client_auth_optional: false,
            rustls: Some(config),
        }
    }

    /// The acceptor for these settings, or INVALID_ARGUMENT saying what is wrong.
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, Status> {
        self.build()
            .map(TlsAcceptor::from)
            .map_err(|why| Status::invalid_argument(format!("server TLS config: {why}")))
    }

    fn build(&self) -> Result<Arc<ServerConfig>, String> {
        if let Some(config) = &self.rustls {
            let mut config = (**config).clone();
            config.alpn_protocols = vec![ALPN_H2.to_vec()];
            return Ok(Arc::new(config));
        }
        let identity = self.identity.as_ref().ok_or("no server identity")?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS protocol versions: {e}"))?;
        let builder = if self.client_ca.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            for ca in &self.client_ca {
                for cert in ca.parse("client CA certificate")? {
                    roots.add(cert).map_err(|e| {
                        format!("client CA certificate: not usable as a trust anchor: {e}")
                    })?;
                }
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider());
            let verifier = if self.client_auth_optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        };
        let (chain, key) = identity.parse("server")?;
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("server certificate and key: {e}"))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// rustls's `ring` provider, named explicitly so a process where another crate enables
/// aws-lc-rs too still builds configs (rustls panics on an ambiguous process default).
///
/// rustls 0.23.48 deprecates it because ring has no post-quantum key exchange; aws-lc-rs
/// has, but needs cmake and a long C build on every user's machine, which plexus avoids.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trust anchors, loaded once per process (unparsable ones skipped).
fn native_roots() -> Result<&'static RootCertStore, String> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    let loaded = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            let why = found
                .errors
                .iter()
                .map(|e| format!(": {e}"))
                .collect::<String>();
            return Err(format!(
                "no system root certificates found{why}; install the system's CA bundle \
                 (ca-certificates), set SSL_CERT_FILE, or give a CA certificate"
            ));
        }
        Ok(roots)
    });
    loaded.as_ref().map_err(Clone::clone)
}

/// Makes `target` (parsed from `text`) secure when it asks for TLS (`https://`) or `config`
/// is given: wraps `connector` in a TLS connector and sets `:scheme` to https (and
/// `:authority` to an overriding server name). Returns `connector` unchanged for plaintext
/// targets.
pub(crate) fn secure_channel(
    text: &str,
    target: &mut Target,
    config: Option<&ClientTlsConfig>,
    connector: Arc<dyn Connector>,
) -> Result<Arc<dyn Connector>, Status> {
    let invalid = |why: String| Status::invalid_argument(format!("channel TLS config: {why}"));
    match (target.tls, config) {
        (Some(false), Some(_)) => {
            return Err(invalid(
                "an http:// target is plaintext; use https:// or a dns: target with TLS".into(),
            ));
        }
        (Some(false) | None, None) => return Ok(connector),
        (Some(true) | None, _) => {}
    }
    let default_config = ClientTlsConfig::new();
    let config = config.unwrap_or(&default_config);
    let server_name = match &config.server_name {
        Some(name) => {
            target.authority = name
                .parse::<Authority>()
                .map_err(|_| invalid(format!("invalid server name {name:?}")))?;
            server_name(name).map_err(invalid)?
        }
        // The name comes from the target, so the target is what is wrong.
        None => server_name(target.authority.host()).map_err(|why| {
            Status::invalid_argument(format!(
                "invalid target {text:?}: TLS verifies the server by its name, and {why} \
                 (set a server name in the TLS config to override it)"
            ))
        })?,
    };
    target.scheme = Scheme::HTTPS;
    let rustls = config.build().map_err(invalid)?;
    Ok(Arc::new(TlsConnect {
        inner: connector,
        has_identity: rustls.client_auth_cert_resolver.has_certs(),
        tls: TlsConnector::from(rustls),
        server_name,
    }))
}

/// A DNS name or IP address to verify a server certificate against.
fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    // A fully qualified name's trailing dot is not part of the name in a certificate.
    let dns = bare.strip_suffix('.').unwrap_or(bare);
    ServerName::try_from(dns.to_string())
        .map_err(|_| format!("{name:?} is not a valid DNS name or IP address"))
}

/// A connector that opens a stream with the inner connector and runs a TLS handshake on it.
struct TlsConnect {
    inner: Arc<dyn Connector>,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    /// Whether we present a client certificate when asked (for error messages).
    has_identity: bool,
}

impl Connector for TlsConnect {
    fn connect(&self, address: &Address) -> BoxFuture<io::Result<BoxedIo>> {
        let io = self.inner.connect(address);
        let tls = self.tls.clone();
        let name = self.server_name.clone();
        let has_identity = self.has_identity;
        Box::pin(async move {
            let io = io.await?;
            let stream = tls
                .connect(name.clone(), io)
                .await
                .map_err(|e| handshake_error(e, &name))?;
            if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS handshake failed: the server did not negotiate HTTP/2 (ALPN \"h2\"), \
                     which gRPC requires",
                ));
            }
            Ok(Box::new(ClientStream {
                stream,
                fresh: true,
                has_identity,
            }) as BoxedIo)
        })
    }
}

/// A client's TLS stream that explains a server hanging up before it sent anything. Over TLS
/// 1.3 the client's side of the handshake ends before the server has checked the client's
/// certificate, so a server that rejects it (or wanted one) says so only afterwards: with an
/// alert, or by closing the connection.
struct ClientStream {
    stream: futures_rustls::client::TlsStream<BoxedIo>,
    /// Nothing read yet since the handshake.
    fresh: bool,
    has_identity: bool,
}

impl ClientStream {
    fn explain(&self, err: io::Error) -> io::Error {
        use rustls::AlertDescription as A;
        let alert = match err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::AlertReceived(alert)) => Some(*alert),
            _ => None,
        };
        let why = match (alert, self.has_identity) {
            (Some(A::CertificateRequired), _) => {
                "the server requires a client certificate and none is configured".to_string()
            }
            (
                Some(
                    alert @ (A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::AccessDenied),
                ),
                _,
            ) => format!("the server refused our client certificate (TLS alert {alert:?})"),
            (Some(_), _) => return err,
            (None, identity) => {
                let guess = match identity {
                    true => "it may have refused our client certificate",
                    false => "it may require a client certificate, and none is configured",
                };
                // An end of stream says no more than the sentence; other errors may.
                let detail = match err.kind() {
                    io::ErrorKind::UnexpectedEof => String::new(),
                    _ => format!(" ({err})"),
                };
                format!(
                    "the server closed the connection right after the TLS handshake; {guess}{detail}"
                )
            }
        };
        io::Error::new(err.kind(), why)
    }
}

impl ClientStream {
    /// A write that fails before anything was read: the server reset the connection, which
    /// also destroys an alert it may have sent.
    fn explain_write<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(Err(err)) if self.fresh => Poll::Ready(Err(self.explain(err))),
            other => other,
        }
    }
}

impl futures_io::AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if !this.fresh {
            return polled;
        }
        match polled {
            Poll::Ready(Ok(0)) if !buf.is_empty() => {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream");
                Poll::Ready(Err(this.explain(eof)))
            }
            Poll::Ready(Ok(n)) => {
                this.fresh = n == 0;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(this.explain(err))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_io::AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.explain_write(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.explain_write(polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.explain_write(polled)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// Rewrites a failed client handshake's error so the message names the cause.
fn handshake_error(err: io::Error, name: &ServerName<'_>) -> io::Error {
    let why = match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(cert)) => describe_certificate_error(cert, name),
        Some(rustls::Error::NoApplicationProtocol) => {
            "the server does not speak HTTP/2 (no common ALPN protocol; gRPC needs \"h2\")"
                .to_string()
        }
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
            "the server did not answer in TLS (is it a plaintext server?)".to_string()
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("the server refused the handshake (TLS alert {alert:?})")
        }
        Some(other) => other.to_string(),
        None => err.to_string(),
    };
    io::Error::new(err.kind(), format!("TLS handshake failed: {why}"))
}

fn describe_certificate_error(err: &rustls::CertificateError, name: &ServerName<'_>) -> String {
    use rustls::CertificateError as E;
    match err {
        E::UnknownIssuer => "the server's certificate is not signed by a trusted CA (unknown \
                             issuer)"
            .to_string(),
        E::NotValidForName => format!(
            "name mismatch: the server's certificate is not valid for {:?}",
            name.to_str()
        ),
        E::NotValidForNameContext { .. } => format!("name mismatch: {err}"),
        E::Expired | E::ExpiredContext { .. } => {
            format!("the server's certificate has expired ({err})")
        }
        E::NotValidYet | E::NotValidYetContext { .. } => {
            format!("the server's certificate is not valid yet ({err})")
        }
        E::BadSignature => "the server's certificate has a bad signature".to_string(),
        E::Revoked => "the server's certificate is revoked".to_string(),
        _ => format!("bad server certificate: {err}"),
    }
}

/// How long a server keeps a connection whose TLS handshake failed, reading and discarding
/// what the client sends, so the client reads our alert before the connection closes.
/// Closing a socket with unread data resets it, and a reset can destroy the alert in flight.
const FAILED_HANDSHAKE_LINGER: Duration = Duration::from_secs(1);

/// Bytes a server reads and discards from a client whose TLS handshake failed.
const FAILED_HANDSHAKE_DRAIN: usize = 64 * 1024;

/// Runs the server side of a TLS handshake on `io`; returns the stream and the client's
/// certificate chain (if it sent one).
pub(crate) async fn accept<I: Io>(
    acceptor: &TlsAcceptor,
    io: I,
) -> Result<
    (
        futures_rustls::server::TlsStream<I>,
        Option<PeerCertificates>,
    ),
    Status,
> {
    let stream = match acceptor.accept(io).into_fallible().await {
        Ok(stream) => stream,
        Err((err, io)) => {
            linger(io).await;
            let why = match err
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
            {
                Some(rustls::Error::InvalidCertificate(cert)) => {
                    format!("bad client certificate: {cert}")
                }
                Some(rustls::Error::NoCertificatesPresented) => {
                    "the client presented no certificate, which this server requires".to_string()
                }
                Some(other) => other.to_string(),
                None => err.to_string(),
            };
            return Err(Status::unavailable(format!("TLS handshake failed: {why}")));
        }
    };
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .filter(|certs| !certs.is_empty())
        .map(|certs| PeerCertificates(certs.iter().map(|c| c.clone().into_owned()).collect()));
    Ok((stream, peer))
}

/// A lingering close: ends our side (after the alert rustls wrote), then reads and discards
/// until the client closes, [`FAILED_HANDSHAKE_DRAIN`] bytes, or [`FAILED_HANDSHAKE_LINGER`].
async fn linger<I: Io>(mut io: I) {
    use std::future::poll_fn;
    let drain = async {
        let _ = poll_fn(|cx| Pin::new(&mut io).poll_close(cx)).await;
        let mut buf = [0u8; 4096];
        let mut left = FAILED_HANDSHAKE_DRAIN;
        while left > 0 {
            match poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut buf)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = futures_util::future::select(
        std::pin::pin!(drain),
        async_io::Timer::after(FAILED_HANDSHAKE_LINGER),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert_eq!(
            server_name("foo.test.google.fr.").unwrap().to_str(),
            "foo.test.google.fr"
        );
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn malformed_pem_is_a_clear_error() {
        let err = Certificate::from_pem("nothing here").parse("CA certificate");
        assert!(err.unwrap_err().contains("no CERTIFICATE block"));
        let err = Identity::from_pem("", "").parse("server");
        assert!(err.unwrap_err().contains("server certificate"));
        let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        let err = Certificate::from_pem(bad)
            .parse("CA certificate")
            .unwrap_err();
        assert!(err.contains("malformed PEM"), "{err}");
    }

    fn test_ca() -> Certificate {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        Certificate::from_pem(params.self_signed(&key).unwrap().pem())
    }

    fn secured(target: &str, config: Option<&ClientTlsConfig>) -> Target {
        let mut parsed = Target::parse(target).unwrap();
        let connector = Arc::new(super::super::SocketConnector);
        secure_channel(target, &mut parsed, config, connector).unwrap();
        parsed
    }

    #[test]
    fn tls_sets_the_scheme_and_an_override_sets_the_authority() {
        let config = ClientTlsConfig::new().ca_certificate(test_ca());
        for t in ["dns:///svc.local:50051", "127.0.0.1:1", "unix:/tmp/x.sock"] {
            let plain = secured(t, None);
            assert_eq!(plain.scheme, Scheme::HTTP, "{t}");
            let secure = secured(t, Some(&config));
            assert_eq!(secure.scheme, Scheme::HTTPS, "{t}");
            assert_eq!(secure.authority, plain.authority, "{t}");
        }
        let https = secured("https://svc.local", Some(&config));
        assert_eq!(
            (https.scheme, https.authority.as_str()),
            (Scheme::HTTPS, "svc.local:443")
        );
        let named = config.clone().server_name("foo.test.google.fr");
        let overridden = secured("127.0.0.1:1", Some(&named));
        assert_eq!(overridden.authority.as_str(), "foo.test.google.fr");
    }

    #[test]
    fn http_target_with_tls_config_is_refused() {
        let mut target = Target::parse("http://localhost:1").unwrap();
        let err = secure_channel(
            "http://localhost:1",
            &mut target,
            Some(&ClientTlsConfig::new()),
            Arc::new(super::super::SocketConnector),
        )
        .err()
        .unwrap();
        assert!(err.message().contains("plaintext"), "{err}");
    }

    #[test]
    fn a_target_that_names_no_certificate_name_is_an_invalid_target() {
        // Found by the property test: `0` is a URI host but neither a DNS name nor an IP.
        let mut target = Target::parse("https://0").unwrap();
        let err = secure_channel(
            "https://0",
            &mut target,
            None,
            Arc::new(super::super::SocketConnector),
        )
        .err()
        .unwrap();
        assert_eq!(err.code(), crate::Code::InvalidArgument);
        assert!(
            err.message().starts_with("invalid target \"https://0\": "),
            "{err}"
        );
    }
}

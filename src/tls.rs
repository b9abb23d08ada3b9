//! TLS 1.3 configuration for both ends: PEM loading, the server's certificate
//! (reloadable), and how the client decides to trust a server (pin or CA).

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::{Error, Kind, Result};
use crate::protocol::ALPN;

/// The crypto provider: ring, TLS 1.3 suites only, AES-128-GCM first (the
/// fastest on CPUs with AES-NI, and no weaker in practice than AES-256).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::*;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// SHA-256 of a certificate's DER bytes, lower-case hex: the pin.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// Normalise a pin as users type it: optional `sha256:` prefix, colons, any case.
pub fn parse_pin(pin: &str) -> Result<[u8; 32]> {
    let p = pin.trim();
    let p = p
        .strip_prefix("sha256:")
        .or_else(|| p.strip_prefix("SHA256:"))
        .unwrap_or(p);
    let hexed: String = p
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&hexed, &mut out).map_err(|_| {
        Error::usage(format!(
            "invalid --pin {:?}: expected the 64 hex digits of the server certificate's SHA-256 fingerprint, as printed by 'sft serve'",
            crate::names::escape(pin)
        ))
    })?;
    Ok(out)
}

/// Read a PEM certificate chain; the error names the file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let what = format!("reading certificates from {}", path.display());
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| pem_error(&what, e))?;
    let certs = iter
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&what, e))?;
    if certs.is_empty() {
        return Err(Error::usage(format!(
            "{what}: no CERTIFICATE block found; expected a PEM file"
        )));
    }
    Ok(certs)
}

/// Read a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let what = format!("reading private key from {}", path.display());
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(&what, e))
}

fn pem_error(what: &str, e: rustls::pki_types::pem::Error) -> Error {
    use rustls::pki_types::pem::Error as P;
    match e {
        P::Io(io) => Error::io(what, &io),
        P::NoItemsFound => Error::usage(format!(
            "{what}: no matching PEM block found (expected a PRIVATE KEY / CERTIFICATE in PEM form)"
        )),
        other => Error::usage(format!("{what}: {other:?}; expected a PEM file")),
    }
}

/// Build the certified key (chain + signer) for the server.
pub fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>> {
    let signer = provider().key_provider.load_private_key(key).map_err(|e| {
        Error::usage(format!(
            "unsupported private key: {e}; use an RSA, ECDSA P-256/P-384 or Ed25519 key"
        ))
    })?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| {
        Error::usage(format!(
            "the private key does not belong to the certificate: {e}"
        ))
    })?;
    Ok(Arc::new(ck))
}

/// Serves one certificate that can be replaced while the server runs.
#[derive(Debug)]
pub struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl CertSlot {
    pub fn new(ck: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(CertSlot(RwLock::new(ck)))
    }
    pub fn replace(&self, ck: Arc<CertifiedKey>) {
        if let Ok(mut g) = self.0.write() {
            *g = ck;
        }
    }
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|g| g.clone())
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// ALPN ids of HTTPS (share links), offered after `sft/1` when the web side is on.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// TLS 1.3-only server configuration (no 0-RTT; ALPN sft/1).
pub fn server_config(slot: Arc<CertSlot>) -> Result<Arc<rustls::ServerConfig>> {
    server_config_for(slot, false)
}

/// The same, also offering `h2` and `http/1.1` when `web` is on: the ALPN id
/// chosen in the handshake decides what the connection speaks.
pub fn server_config_for(slot: Arc<CertSlot>, web: bool) -> Result<Arc<rustls::ServerConfig>> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::other(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(slot);
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    if web {
        cfg.alpn_protocols
            .extend([ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()]);
    }
    cfg.max_early_data_size = 0;
    Ok(Arc::new(cfg))
}

/// Decides, after the handshake and before any secret is sent, whether to
/// trust a server seen for the first time (given its fingerprint, hex).
pub type FirstUse = Arc<dyn Fn(&str) -> Result<()> + Send + Sync>;

/// How the client decides that the server is the right one.
#[derive(Clone)]
pub enum Trust {
    /// The SHA-256 of the server's certificate.
    Pin([u8; 32]),
    /// A CA certificate (or the server's own certificate), PEM file.
    Ca(std::path::PathBuf),
    /// The fingerprint recorded for this server in a known-servers file.
    Known {
        pin: [u8; 32],
        file: std::path::PathBuf,
    },
    /// A server not seen before: any certificate completes the handshake
    /// (its signature still checked), then the callback decides.
    FirstUse(FirstUse),
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::Pin(p) => write!(f, "Pin({})", hex::encode(p)),
            Trust::Ca(p) => write!(f, "Ca({})", p.display()),
            Trust::Known { pin, file } => {
                write!(f, "Known({}, {})", hex::encode(pin), file.display())
            }
            Trust::FirstUse(_) => write!(f, "FirstUse"),
        }
    }
}

/// The client configuration, and the pin verifier when pinning (to report
/// what was seen on a mismatch).
pub fn client_config(
    trust: &Trust,
) -> Result<(Arc<rustls::ClientConfig>, Option<Arc<PinVerifier>>)> {
    let prov = provider();
    let builder = rustls::ClientConfig::builder_with_provider(prov.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::other(format!("TLS configuration: {e}")))?;
    let (mut cfg, pin) = match trust {
        Trust::Pin(_) | Trust::Known { .. } | Trust::FirstUse(_) => {
            let pin = match trust {
                Trust::Pin(p) | Trust::Known { pin: p, .. } => Some(*p),
                _ => None,
            };
            let v = Arc::new(PinVerifier {
                pin,
                algs: prov.signature_verification_algorithms,
                seen: Mutex::new(None),
            });
            let cfg = builder
                .dangerous()
                .with_custom_certificate_verifier(v.clone())
                .with_no_client_auth();
            (cfg, Some(v))
        }
        Trust::Ca(path) => {
            let certs =
                load_certs(path).map_err(|e| Error::new(Kind::Usage, format!("{e} (--ca)")))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in &certs {
                roots.add(c.clone()).map_err(|e| {
                    Error::usage(format!(
                        "{}: not a usable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                prov.clone(),
            )
            .build()
            .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
            let v = Arc::new(CaVerifier {
                inner,
                exact: certs,
            });
            let cfg = builder
                .dangerous()
                .with_custom_certificate_verifier(v)
                .with_no_client_auth();
            (cfg, None)
        }
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok((Arc::new(cfg), pin))
}

/// Ordinary CA verification, plus one case people hit with certificates made
/// by `openssl req -x509`: the file given as CA *is* the server's own
/// certificate, but marked CA:TRUE, which WebPKI refuses as an end entity. A
/// leaf byte-identical to a certificate the user gave is accepted, still only
/// for the names it covers.
#[derive(Debug)]
struct CaVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    exact: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(v) => Ok(v),
            Err(e) if self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) => {
                let parsed =
                    rustls::server::ParsedCertificate::try_from(end_entity).map_err(|_| e)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts exactly one certificate, by its SHA-256, and checks the handshake
/// signature against it. Host names are not checked: the pin is the identity.
/// Without a pin (first use) any certificate is accepted and remembered, for
/// the caller to decide on before sending anything.
#[derive(Debug)]
pub struct PinVerifier {
    pin: Option<[u8; 32]>,
    algs: WebPkiSupportedAlgorithms,
    seen: Mutex<Option<String>>,
}

impl PinVerifier {
    /// The fingerprint the server presented, if a handshake got that far.
    pub fn seen(&self) -> Option<String> {
        self.seen.lock().ok().and_then(|g| g.clone())
    }
    pub fn expected(&self) -> String {
        self.pin.map(hex::encode).unwrap_or_default()
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(hex::encode(got));
        }
        let ok = match &self.pin {
            Some(pin) => subtle::ConstantTimeEq::ct_eq(&got[..], &pin[..]).into(),
            None => true,
        };
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// rustls's texts carry Rust Debug output (`NotValidForNameContext {
/// expected: DnsName(..) }`) and documentation URLs; these are the plain,
/// one-line words people see instead, on the client and in the server's log.
pub fn describe_certificate(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names = if presented.is_empty() {
                "no names".to_string()
            } else {
                presented
                    .iter()
                    .map(|n| presented_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "the certificate is for {}, not for {}",
                crate::names::escape(&names),
                crate::names::escape(&expected.to_str())
            )
        }
        C::NotValidForName => "the certificate is not for the name connected to".into(),
        C::Expired | C::ExpiredContext { .. } => "the certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the certificate is not valid yet (is this machine's clock right?)".into()
        }
        C::UnknownIssuer => "the certificate was not issued by this CA".into(),
        C::BadSignature
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "the certificate's signature cannot be verified".into()
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "the certificate is not meant for a TLS server".into()
        }
        C::Revoked => "the certificate has been revoked".into(),
        C::BadEncoding => "the certificate is malformed".into(),
        C::ApplicationVerificationFailure => "the certificate did not pass sft's check".into(),
        _ => "the certificate was refused".into(),
    }
}

/// A name as webpki presents it (`DnsName("a.example")`, `IpAddress(..)`)
/// as people write it (`a.example`).
fn presented_name(n: &str) -> &str {
    match n.split_once('(') {
        Some((kind, rest)) if !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphabetic()) => {
            let inner = rest.strip_suffix(')').unwrap_or(rest);
            inner.trim_matches('"')
        }
        _ => n,
    }
}

/// `BadCertificate` as `bad certificate`.
fn words(debug_name: &str) -> String {
    let mut out = String::new();
    for c in debug_name.chars().filter(|c| c.is_ascii_alphanumeric()) {
        if c.is_ascii_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A rustls error in plain words.
pub fn describe_rustls(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => describe_certificate(c),
        E::AlertReceived(a) => format!(
            "the peer ended the TLS handshake ({})",
            words(&format!("{a:?}"))
        ),
        E::PeerIncompatible(_) => "the peer does not speak TLS 1.3 as sft does".into(),
        E::NoCertificatesPresented => "the peer presented no certificate".into(),
        other => strip_url(&other.to_string()),
    }
}

/// Drop a trailing ": https://..." that rustls appends to some messages.
fn strip_url(s: &str) -> String {
    match s.find(": http") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// An I/O error that carries a TLS error, in plain words; `None` for other
/// I/O errors. rustls reports a peer that closed without close_notify as an
/// UnexpectedEof whose text ends in a documentation URL.
pub fn describe_io(e: &std::io::Error) -> Option<String> {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return Some(describe_rustls(inner));
    }
    let s = e.to_string();
    if s.contains("close_notify") {
        return Some("the peer closed the connection without ending TLS (no close_notify)".into());
    }
    s.contains("https://").then(|| strip_url(&s))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tls_errors_read_as_plain_words() {
        use rustls::pki_types::ServerName;
        let e = rustls::CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("files.example.com").unwrap(),
            presented: vec!["DnsName(\"localhost\")".into(), "127.0.0.1".into()],
        };
        let s = describe_certificate(&e);
        assert!(s.starts_with("the certificate is for "), "{s}");
        assert!(s.ends_with(", 127.0.0.1, not for files.example.com"), "{s}");
        assert!(!s.contains("Context") && !s.contains("expected:"), "{s}");
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        assert_eq!(
            describe_rustls(&alert),
            "the peer ended the TLS handshake (bad certificate)"
        );
        let eof = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify: https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof",
        );
        let s = describe_io(&eof).unwrap();
        assert!(!s.contains("http"), "{s}");
        assert_eq!(
            s,
            "the peer closed the connection without ending TLS (no close_notify)"
        );
        let wrapped = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(
            describe_io(&wrapped).unwrap(),
            "the certificate was not issued by this CA"
        );
        assert_eq!(
            describe_io(&std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            None
        );
    }

    use super::*;

    #[test]
    fn pins_are_accepted_in_the_forms_people_paste() {
        let hexed = "ab".repeat(32);
        let want = [0xab; 32];
        assert_eq!(parse_pin(&hexed).unwrap(), want);
        assert_eq!(
            parse_pin(&format!("sha256:{}", hexed.to_uppercase())).unwrap(),
            want
        );
        let colons: Vec<&str> = std::iter::repeat_n("AB", 32).collect();
        assert_eq!(parse_pin(&colons.join(":")).unwrap(), want);
        let e = parse_pin("1234").unwrap_err();
        assert_eq!(e.kind, Kind::Usage);
        assert!(e.message.contains("64 hex digits"));
    }
}

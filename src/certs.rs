//! Certificates made with rcgen: the server's self-signed certificate on
//! first start, and (for tests and `sft cert`) a CA and certificates it signs.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::error::{Error, Result};

/// A certificate and its private key, both PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

fn err(e: rcgen::Error) -> Error {
    Error::other(format!("generating a certificate: {e}"))
}

/// The names a self-signed server certificate covers by default.
pub fn default_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = rustix::system::uname().nodename().to_str()
        && !h.is_empty()
        && h != "localhost"
    {
        names.push(h.to_string());
    }
    names
}

/// A self-signed certificate (ECDSA P-256) for the given DNS names / IPs.
pub fn self_signed(names: &[String]) -> Result<Pem> {
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "sft server");
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate authority (self-signed, CA:true).
pub fn ca(common_name: &str) -> Result<Pem> {
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A server certificate for `names`, signed by the CA given as PEM.
pub fn signed_by(ca: &Pem, names: &[String]) -> Result<Pem> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("sft server"),
    );
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

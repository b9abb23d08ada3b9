//! Certificates made with rcgen: the server's self-signed certificate on
//! first start, and (for tests and `sft cert`) a CA and certificates it signs.
//!
//! Every certificate has a bounded lifetime starting an hour ago (clock skew)
//! and the extensions auditors and browsers expect: server certificates
//! carry basicConstraints CA:false, keyUsage digitalSignature, extendedKeyUsage
//! serverAuth, and subject and authority key identifiers; a CA carries CA:true,
//! keyCertSign/cRLSign and its own key identifiers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    SerialNumber,
};

use crate::error::{Error, Result};

/// Default lifetime of a server certificate: the most the CA/Browser Forum
/// allows for publicly trusted ones (398 days), less a day of margin.
pub const SERVER_DAYS: u32 = 397;
/// Default lifetime of a CA made by `sft cert ca`: ten years.
pub const CA_DAYS: u32 = 3650;
/// Longest lifetime `--days` accepts, for any certificate.
pub const MAX_DAYS: u32 = 3650;

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

/// Check a `--days` value.
pub fn check_days(days: u32) -> Result<u32> {
    if days == 0 || days > MAX_DAYS {
        return Err(Error::usage(format!(
            "--days {days}: choose a lifetime from 1 to {MAX_DAYS} days"
        )));
    }
    Ok(days)
}

/// Valid from an hour ago (tolerating clocks a little behind) for `days`.
fn set_validity(params: &mut CertificateParams, days: u32) -> Result<()> {
    let days = check_days(days)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::other("the system clock is set before 1970"))?;
    let start = now.saturating_sub(Duration::from_secs(3600));
    // 1970 plus a few thousand years at most: always within the date range
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + start;
    params.not_after = epoch + start + Duration::from_secs(u64::from(days) * 86_400);
    Ok(())
}

/// The parameters of a server (end-entity) certificate for `names`.
fn server_params(names: &[String], days: u32) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
    set_validity(&mut params, days)?;
    // ExplicitNoCa writes basicConstraints CA:false and the subject key id
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A self-signed certificate (ECDSA P-256) for the given DNS names / IPs,
/// valid for [`SERVER_DAYS`].
pub fn self_signed(names: &[String]) -> Result<Pem> {
    self_signed_for(names, SERVER_DAYS)
}

/// [`self_signed`], valid for `days`.
pub fn self_signed_for(names: &[String], days: u32) -> Result<Pem> {
    let key = KeyPair::generate().map_err(err)?;
    let mut params = server_params(names, days)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "sft server");
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate authority (self-signed, CA:true), valid for [`CA_DAYS`].
pub fn ca(common_name: &str) -> Result<Pem> {
    ca_for(common_name, CA_DAYS)
}

/// [`ca`], valid for `days`.
pub fn ca_for(common_name: &str, days: u32) -> Result<Pem> {
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    set_validity(&mut params, days)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A server certificate for `names`, signed by the CA given as PEM, valid
/// for [`SERVER_DAYS`].
pub fn signed_by(ca: &Pem, names: &[String]) -> Result<Pem> {
    signed_by_for(ca, names, SERVER_DAYS)
}

/// [`signed_by`], valid for `days`.
pub fn signed_by_for(ca: &Pem, names: &[String], days: u32) -> Result<Pem> {
    signed_by_with(ca, names, days, None)
}

/// [`signed_by_for`], naming where the CA's revocation list is published
/// (a CRL distribution point), so relying parties and auditors can check it.
pub fn signed_by_with(ca: &Pem, names: &[String], days: u32, crl_url: Option<&str>) -> Result<Pem> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let mut params = server_params(names, days)?;
    if let Some(url) = crl_url {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.to_string()],
        }];
    }
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

/// The CA's certificate revocation list (PEM): nothing revoked, valid from
/// an hour ago for `days`, numbered by its issue time so a newer list
/// always has a higher number. Publish it where `--crl-url` says.
pub fn crl(ca: &Pem, days: u32) -> Result<String> {
    let days = check_days(days)?;
    let ca_key = KeyPair::from_pem(&ca.key).map_err(err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(err)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::other("the system clock is set before 1970"))?;
    let start = now.saturating_sub(Duration::from_secs(3600));
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let params = CertificateRevocationListParams {
        this_update: epoch + start,
        next_update: epoch + start + Duration::from_secs(u64::from(days) * 86_400),
        crl_number: SerialNumber::from(now.as_secs().to_be_bytes().to_vec()),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(&issuer).map_err(err)?.pem().map_err(err)
}

/// When the first certificate in a PEM text stops being valid (seconds
/// since 1970), if it can be read.
pub fn not_after(cert_pem: &str) -> Option<i64> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// When the certificate in `path` expires, for `sft serve`'s banner
/// ("expires on 2027-01-07T20:00:00Z (in 397 days)" or "EXPIRED on …"), and
/// whether that needs attention (expired or within 30 days).
pub fn expiry_note(path: &std::path::Path) -> Option<(String, bool)> {
    let text = std::fs::read_to_string(path).ok()?;
    let end = not_after(&text)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    let when = humantime::format_rfc3339_seconds(
        UNIX_EPOCH + Duration::from_secs(u64::try_from(end).unwrap_or(0)),
    );
    if end <= now {
        return Some((
            format!("EXPIRED on {when}; clients that check it with --ca refuse it"),
            true,
        ));
    }
    let left = (end - now) / 86_400;
    Some((format!("expires on {when} (in {left} days)"), left < 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_bounded_and_checked() {
        let day = 86_400;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let ca = ca("t").unwrap();
        let end = not_after(&ca.cert).unwrap();
        assert!(
            (end - now - i64::from(CA_DAYS) * day).abs() < 2 * 3600,
            "{end}"
        );
        let leaf = signed_by_for(&ca, &["localhost".into()], 30).unwrap();
        let end = not_after(&leaf.cert).unwrap();
        assert!((end - now - 30 * day).abs() < 2 * 3600, "{end}");
        for bad in [0, MAX_DAYS + 1] {
            let e = self_signed_for(&["localhost".into()], bad).err().unwrap();
            assert!(e.message.contains("from 1 to 3650 days"), "{e}");
        }
        assert_eq!(not_after("not a certificate"), None);
    }
}

//! The installer's X.509 issuing, through OpenSSL: the signer CAs of the configuration ISO
//! (OpenShift's signer subjects, no key identifiers), its admin client certificate, and the
//! payload registry's CA and serving certificate.

use anyhow::Result;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

/// A certificate and its private key.
pub struct Signer {
    pub key: PKey<Private>,
    pub cert: X509,
}

fn name(ou: Option<&str>, o: Option<&str>, cn: &str) -> Result<openssl::x509::X509Name> {
    let mut n = X509NameBuilder::new()?;
    if let Some(o) = o {
        n.append_entry_by_text("O", o)?;
    }
    if let Some(ou) = ou {
        n.append_entry_by_text("OU", ou)?;
    }
    n.append_entry_by_text("CN", cn)?;
    Ok(n.build())
}

fn serial() -> Result<openssl::asn1::Asn1Integer> {
    let mut bn = BigNum::new()?;
    bn.rand(127, openssl::bn::MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

/// A self-signed CA with OpenShift's signer subject (encoded `OU=openshift`, then `CN=<cn>`, as
/// OpenShift's Go tooling writes it). No key identifiers: a
/// client trusting it matches the cluster's re-signed CA by name and key alone.
pub fn ca(cn: &str, days: u32) -> Result<Signer> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let subject = name(Some("openshift"), None, cn)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let sn = serial()?;
    b.set_serial_number(&sn)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(&subject)?;
    b.set_pubkey(&key)?;
    let (nb, na) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .digital_signature()
            .build()?,
    )?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(Signer {
        key,
        cert: b.build(),
    })
}

/// A TLS server certificate for `names` (DNS names and IP addresses) under `signer`.
pub fn server_cert(signer: &Signer, cn: &str, names: &[&str], days: u32) -> Result<Signer> {
    leaf(signer, None, cn, names, true, days)
}

/// A leaf certificate (server or client) under `signer`, with `sans` as DNS names or IPs.
pub fn leaf(
    signer: &Signer,
    o: Option<&str>,
    cn: &str,
    sans: &[&str],
    server: bool,
    days: u32,
) -> Result<Signer> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let sn = serial()?;
    b.set_serial_number(&sn)?;
    let subject = name(None, o, cn)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(signer.cert.subject_name())?;
    b.set_pubkey(&key)?;
    let (nb, na) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    let mut eku = ExtendedKeyUsage::new();
    if server {
        eku.server_auth();
    } else {
        eku.client_auth();
    }
    b.append_extension(eku.build()?)?;
    if !sans.is_empty() {
        let mut san = openssl::x509::extension::SubjectAlternativeName::new();
        for n in sans {
            if n.parse::<std::net::IpAddr>().is_ok() {
                san.ip(n);
            } else {
                san.dns(n);
            }
        }
        let ext = san.build(&b.x509v3_context(Some(&signer.cert), None))?;
        b.append_extension(ext)?;
    }
    b.sign(&signer.key, MessageDigest::sha256())?;
    Ok(Signer {
        key,
        cert: b.build(),
    })
}

pub fn pem_cert(s: &Signer) -> Result<String> {
    Ok(String::from_utf8(s.cert.to_pem()?)?)
}

pub fn pem_key(s: &Signer) -> Result<String> {
    Ok(String::from_utf8(s.key.private_key_to_pem_pkcs8()?)?)
}

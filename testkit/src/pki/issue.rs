//! Issuing one certificate: a fresh or given key, the extensions OpenShift's signers and
//! leaves carry, signed by its issuer (or by itself).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use der::asn1::{BitString, Ia5String, OctetString};
use der::Encode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

use super::Issued;
use imgmode_recert::keys::{KeyKind, PrivateKey};

const SERVER_AUTH: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const CLIENT_AUTH: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// A subject alternative name of a generated certificate.
pub enum San<'a> {
    Dns(&'a str),
    Ip(&'a str),
}

/// One certificate to issue.
pub(super) struct Req<'a> {
    pub(super) name: &'a str,
    pub(super) subject: &'a str,
    pub(super) kind: KeyKind,
    pub(super) ca: bool,
    pub(super) client: bool,
    pub(super) server: bool,
    pub(super) sans: Vec<San<'a>>,
    pub(super) days: u64,
}

/// Issue `req` with a new key, signed by `issuer` (self-signed without one).
pub(super) fn issue(req: Req, issuer: Option<&Issued>) -> Result<Issued> {
    let key = PrivateKey::generate(req.kind)?;
    issue_with_key(req, key, issuer)
}

fn issue_with_key(req: Req, key: PrivateKey, issuer: Option<&Issued>) -> Result<Issued> {
    let spki = key.spki();
    let ski = imgmode_recert::cert::key_id(&spki);
    let subject = Name::from_str(req.subject).context("subject")?;
    let (issuer_name, issuer_ski, signer) = match issuer {
        Some(i) => (i.subject.clone(), i.ski.clone(), &i.key),
        None => (subject.clone(), ski.clone(), &key),
    };
    let now = SystemTime::now();
    let validity = Validity {
        not_before: Time::try_from(now - Duration::from_secs(3600))?,
        not_after: Time::try_from(now + Duration::from_secs(req.days * 86400))?,
    };
    let mut exts = vec![];
    let mut push = |oid: &str, critical: bool, der: Vec<u8>| -> Result<()> {
        exts.push(Extension {
            extn_id: der::asn1::ObjectIdentifier::new(oid).expect("static OID"),
            critical,
            extn_value: OctetString::new(der)?,
        });
        Ok(())
    };
    let usages = if req.ca {
        KeyUsages::DigitalSignature | KeyUsages::KeyCertSign | KeyUsages::CRLSign
    } else {
        KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment
    };
    push("2.5.29.15", true, KeyUsage(usages).to_der()?)?;
    if !req.ca {
        let mut eku = vec![];
        if req.server {
            eku.push(SERVER_AUTH);
        }
        if req.client {
            eku.push(CLIENT_AUTH);
        }
        push("2.5.29.37", false, ExtendedKeyUsage(eku).to_der()?)?;
    }
    push(
        "2.5.29.19",
        true,
        BasicConstraints {
            ca: req.ca,
            path_len_constraint: None,
        }
        .to_der()?,
    )?;
    push(
        "2.5.29.14",
        false,
        SubjectKeyIdentifier(OctetString::new(ski.clone())?).to_der()?,
    )?;
    push(
        "2.5.29.35",
        false,
        AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(issuer_ski)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        }
        .to_der()?,
    )?;
    if !req.sans.is_empty() {
        let mut names = vec![];
        for s in &req.sans {
            names.push(match s {
                San::Dns(d) => GeneralName::DnsName(Ia5String::new(d)?),
                San::Ip(ip) => {
                    let ip: std::net::IpAddr = ip.parse()?;
                    GeneralName::IpAddress(OctetString::new(match ip {
                        std::net::IpAddr::V4(v) => v.octets().to_vec(),
                        std::net::IpAddr::V6(v) => v.octets().to_vec(),
                    })?)
                }
            });
        }
        push("2.5.29.17", false, SubjectAltName(names).to_der()?)?;
    }
    let mut serial = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut serial);
    serial[0] = (serial[0] & 0x7f) | 1;
    let alg = signer.signature_algorithm();
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial)?,
        signature: alg.clone(),
        issuer: issuer_name,
        validity,
        subject: subject.clone(),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(exts),
    };
    let sig = signer.sign_x509(&tbs.to_der()?);
    let der = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig)?,
    }
    .to_der()?;
    Ok(Issued {
        name: req.name.into(),
        der,
        key,
        subject,
        ski,
        issuer: issuer.map(|i| i.name.clone()),
    })
}

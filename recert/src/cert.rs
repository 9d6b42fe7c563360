//! X.509 certificates: what recert reads from them (key identifiers, names, SANs) and how it
//! re-signs one, keeping every extension it does not have to change.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use der::asn1::{BitString, Ia5String, OctetString, Utf8StringRef};
use der::{Any, Decode, Encode, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

use crate::keys::{self, PrivateKey};

const SAN: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.17");
const SKI: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.14");
const AKI: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.35");
const BASIC_CONSTRAINTS: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.19");

/// A parsed certificate with the facts recert needs, computed once.
#[derive(Debug, Clone)]
pub struct Cert {
    pub der: Vec<u8>,
    pub cert: Certificate,
    pub spki_der: Vec<u8>,
    pub tbs_der: Vec<u8>,
}

impl Cert {
    pub fn parse(der: &[u8]) -> Result<Self> {
        let cert = Certificate::from_der(der).context("parsing an X.509 certificate")?;
        let spki_der = keys::spki_to_der(&cert.tbs_certificate.subject_public_key_info);
        let tbs_der = cert.tbs_certificate.to_der()?;
        Ok(Cert {
            der: der.to_vec(),
            cert,
            spki_der,
            tbs_der,
        })
    }

    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    pub fn issuer(&self) -> String {
        self.cert.tbs_certificate.issuer.to_string()
    }

    fn extension(&self, oid: der::asn1::ObjectIdentifier) -> Option<&Extension> {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id == oid)
    }

    pub fn subject_key_id(&self) -> Option<Vec<u8>> {
        let e = self.extension(SKI)?;
        let ski = SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok()?;
        Some(ski.0.as_bytes().to_vec())
    }

    pub fn authority_key_id(&self) -> Option<Vec<u8>> {
        let e = self.extension(AKI)?;
        let aki = AuthorityKeyIdentifier::from_der(e.extn_value.as_bytes()).ok()?;
        Some(aki.key_identifier?.as_bytes().to_vec())
    }

    pub fn is_ca(&self) -> bool {
        self.extension(BASIC_CONSTRAINTS)
            .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
            .is_some_and(|b| b.ca)
    }

    /// DNS names and IP addresses of the subjectAltName extension, as text.
    pub fn sans(&self) -> Vec<String> {
        let Some(e) = self.extension(SAN) else {
            return vec![];
        };
        let Ok(san) = SubjectAltName::from_der(e.extn_value.as_bytes()) else {
            return vec![];
        };
        san.0
            .iter()
            .filter_map(|g| match g {
                GeneralName::DnsName(d) => Some(d.to_string()),
                GeneralName::IpAddress(ip) => ip_from_bytes(ip.as_bytes()).map(|i| i.to_string()),
                _ => None,
            })
            .collect()
    }

    /// Whether `issuer_spki` made this certificate's signature.
    pub fn signed_by(&self, issuer_spki: &[u8]) -> bool {
        let Some(sig) = self.cert.signature.as_bytes() else {
            return false;
        };
        keys::verify(
            issuer_spki,
            &self.cert.signature_algorithm.oid,
            &self.tbs_der,
            sig,
            false,
        )
    }

    pub fn not_after(&self) -> SystemTime {
        self.cert
            .tbs_certificate
            .validity
            .not_after
            .to_system_time()
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

fn ip_to_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// RFC 5280 method 1 key identifier: SHA-1 of the subjectPublicKey bits.
pub fn key_id(spki: &spki::SubjectPublicKeyInfoOwned) -> Vec<u8> {
    openssl::sha::sha1(spki.subject_public_key.raw_bytes()).to_vec()
}

/// Rewrites names: applied to every string attribute of subjects and issuers, to DNS SANs and
/// (when it parses as an IP) to IP SANs.
pub trait NameRewriter {
    fn rewrite(&self, value: &str) -> Option<String>;
}

/// How validity dates change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidityPolicy {
    Keep,
    ForceExpire,
    Extend,
}

pub struct Resign<'a> {
    /// The public key the new certificate carries.
    pub spki: spki::SubjectPublicKeyInfoOwned,
    /// The new issuer's (already rewritten) subject, and its key identifier.
    pub issuer_name: Name,
    pub issuer_key_id: Option<Vec<u8>>,
    pub signer: &'a PrivateKey,
    pub names: &'a dyn NameRewriter,
    pub validity: ValidityPolicy,
    pub now: SystemTime,
}

/// Rewrite a name's string attributes; returns the new name.
pub fn rewrite_name(name: &Name, names: &dyn NameRewriter) -> Result<Name> {
    let mut out = name.clone();
    for rdn in out.0.iter_mut() {
        let mut atvs: Vec<_> = rdn.0.iter().cloned().collect();
        for atv in atvs.iter_mut() {
            let tag = atv.value.tag();
            if !matches!(
                tag,
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString
            ) {
                continue;
            }
            let Ok(s) = std::str::from_utf8(atv.value.value()) else {
                continue;
            };
            if let Some(new) = names.rewrite(s) {
                atv.value = Any::encode_from(&Utf8StringRef::new(&new)?)?;
            }
        }
        rdn.0 = der::asn1::SetOfVec::try_from(atvs)?;
    }
    Ok(out)
}

fn time(t: SystemTime) -> Result<Time> {
    Time::try_from(t).context("encoding a certificate time")
}

/// Build and sign the new certificate for `old`.
pub fn resign(old: &Cert, r: &Resign) -> Result<Vec<u8>> {
    let mut tbs = old.cert.tbs_certificate.clone();
    tbs.subject = rewrite_name(&tbs.subject, r.names).context("rewriting the subject")?;
    tbs.issuer = r.issuer_name.clone();
    tbs.subject_public_key_info = r.spki.clone();
    let mut serial = [0u8; 16];
    openssl::rand::rand_bytes(&mut serial).expect("OpenSSL's random bytes");
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    tbs.serial_number = SerialNumber::new(&serial)?;

    let before = tbs.validity.not_before.to_system_time();
    let after = tbs.validity.not_after.to_system_time();
    let lifetime = after.duration_since(before).unwrap_or(Duration::ZERO);
    match r.validity {
        ValidityPolicy::Keep => {}
        ValidityPolicy::ForceExpire => {
            // the whole validity window moves into the past, its length kept, so that a
            // later extend_expiration gives the certificate its original lifetime again
            let new_after = r.now - Duration::from_secs(60);
            let new_before = new_after - lifetime.max(Duration::from_secs(3600));
            tbs.validity = Validity {
                not_before: time(new_before)?,
                not_after: time(new_after)?,
            };
        }
        ValidityPolicy::Extend => {
            let new_before = r.now - Duration::from_secs(3600);
            tbs.validity = Validity {
                not_before: time(new_before)?,
                not_after: time(new_before + lifetime)?,
            };
        }
    }

    if let Some(exts) = tbs.extensions.as_mut() {
        for e in exts.iter_mut() {
            match e.extn_id {
                SKI => {
                    let ski = SubjectKeyIdentifier(OctetString::new(key_id(&r.spki))?);
                    e.extn_value = OctetString::new(ski.to_der()?)?;
                }
                AKI => {
                    let mut aki = AuthorityKeyIdentifier::from_der(e.extn_value.as_bytes())
                        .context("parsing the authority key identifier")?;
                    if let Some(id) = &r.issuer_key_id {
                        aki.key_identifier = Some(OctetString::new(id.clone())?);
                    }
                    // Issuer name and serial would pin the old issuer certificate.
                    aki.authority_cert_issuer = None;
                    aki.authority_cert_serial_number = None;
                    e.extn_value = OctetString::new(aki.to_der()?)?;
                }
                SAN => {
                    let san = SubjectAltName::from_der(e.extn_value.as_bytes())
                        .context("parsing the subject alternative names")?;
                    let mut out = Vec::with_capacity(san.0.len());
                    for g in san.0 {
                        out.push(match g {
                            GeneralName::DnsName(d) => match r.names.rewrite(d.as_str()) {
                                Some(new) => GeneralName::DnsName(Ia5String::new(&new)?),
                                None => GeneralName::DnsName(d),
                            },
                            GeneralName::IpAddress(ip) => {
                                let new = ip_from_bytes(ip.as_bytes())
                                    .and_then(|old| r.names.rewrite(&old.to_string()))
                                    .and_then(|s| s.parse::<IpAddr>().ok());
                                match new {
                                    Some(n) => {
                                        GeneralName::IpAddress(OctetString::new(ip_to_bytes(n))?)
                                    }
                                    None => GeneralName::IpAddress(ip),
                                }
                            }
                            other => other,
                        });
                    }
                    e.extn_value = OctetString::new(SubjectAltName(out).to_der()?)?;
                }
                _ => {}
            }
        }
    }

    let alg = r.signer.signature_algorithm();
    tbs.signature = alg.clone();
    let tbs_der = tbs.to_der()?;
    let sig = r.signer.sign_x509(&tbs_der);
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig)?,
    };
    Ok(cert.to_der()?)
}

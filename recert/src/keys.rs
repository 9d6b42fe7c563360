//! Private and public keys: parsing every encoding a cluster uses (PKCS#1, PKCS#8, SEC1, SPKI),
//! generating a key of the same type, signing and verifying.

use anyhow::{bail, Context, Result};
use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode, Encode};
use pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

pub const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub const P256_CURVE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub const P384_CURVE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
pub const SHA1_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
pub const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
pub const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
pub const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
pub const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
pub const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");

/// The type and size of a key; a regenerated key always has the same kind as the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum KeyKind {
    Rsa(usize),
    P256,
    P384,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa(bits) => write!(f, "RSA {bits}"),
            KeyKind::P256 => f.write_str("EC P-256"),
            KeyKind::P384 => f.write_str("EC P-384"),
        }
    }
}

/// A key type recert cannot regenerate; the caller names the object it came from.
#[derive(Debug, thiserror::Error)]
#[error("unsupported key type {0}; recert regenerates RSA, EC P-256 and EC P-384 keys")]
pub struct Unsupported(pub String);

#[derive(Clone)]
pub enum PrivateKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.kind())
    }
}

/// PEM labels of private keys, and the encoding each one means.
pub const PKCS1_LABEL: &str = "RSA PRIVATE KEY";
pub const SEC1_LABEL: &str = "EC PRIVATE KEY";
pub const PKCS8_LABEL: &str = "PRIVATE KEY";
pub const SPKI_LABEL: &str = "PUBLIC KEY";
pub const PKCS1_PUBLIC_LABEL: &str = "RSA PUBLIC KEY";

pub fn is_private_key_label(label: &str) -> bool {
    matches!(label, PKCS1_LABEL | SEC1_LABEL | PKCS8_LABEL)
}

pub fn is_public_key_label(label: &str) -> bool {
    matches!(label, SPKI_LABEL | PKCS1_PUBLIC_LABEL)
}

fn curve_name(oid: &ObjectIdentifier) -> String {
    match *oid {
        ED25519 => "Ed25519".into(),
        o if o == ObjectIdentifier::new_unwrap("1.3.101.113") => "Ed448".into(),
        o if o == ObjectIdentifier::new_unwrap("1.3.132.0.35") => "EC P-521".into(),
        o => format!("with algorithm OID {o}"),
    }
}

impl PrivateKey {
    pub fn kind(&self) -> KeyKind {
        match self {
            PrivateKey::Rsa(k) => KeyKind::Rsa(k.size() * 8),
            PrivateKey::P256(_) => KeyKind::P256,
            PrivateKey::P384(_) => KeyKind::P384,
        }
    }

    pub fn generate(kind: KeyKind) -> Result<Self> {
        let mut rng = rand::thread_rng();
        Ok(match kind {
            KeyKind::Rsa(bits) => PrivateKey::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut rng, bits)
                    .with_context(|| format!("generating an RSA {bits} key"))?,
            )),
            KeyKind::P256 => PrivateKey::P256(p256::SecretKey::random(&mut rng)),
            KeyKind::P384 => PrivateKey::P384(p384::SecretKey::random(&mut rng)),
        })
    }

    /// Parse a private key from a PEM block's label and DER body.
    pub fn from_pem_der(label: &str, der: &[u8]) -> Result<Self> {
        match label {
            PKCS1_LABEL => Ok(PrivateKey::Rsa(Box::new(
                rsa::RsaPrivateKey::from_pkcs1_der(der).context("parsing a PKCS#1 RSA key")?,
            ))),
            SEC1_LABEL => {
                let ec = sec1::EcPrivateKey::from_der(der).context("parsing a SEC1 EC key")?;
                // Without parameters the curve follows from the scalar's size.
                let curve = match (
                    ec.parameters.and_then(|p| p.named_curve()),
                    ec.private_key.len(),
                ) {
                    (Some(c), _) => c,
                    (None, 32) => P256_CURVE,
                    (None, 48) => P384_CURVE,
                    (None, n) => bail!("SEC1 EC key without a named curve ({n}-byte scalar)"),
                };
                match curve {
                    P256_CURVE => Ok(PrivateKey::P256(p256::SecretKey::from_sec1_der(der)?)),
                    P384_CURVE => Ok(PrivateKey::P384(p384::SecretKey::from_sec1_der(der)?)),
                    other => Err(Unsupported(format!("EC curve {other}")).into()),
                }
            }
            PKCS8_LABEL => {
                let info = pkcs8::PrivateKeyInfo::from_der(der).context("parsing a PKCS#8 key")?;
                match info.algorithm.oid {
                    RSA_ENCRYPTION => Ok(PrivateKey::Rsa(Box::new(
                        rsa::RsaPrivateKey::from_pkcs8_der(der)?,
                    ))),
                    EC_PUBLIC_KEY => {
                        let curve: ObjectIdentifier = info
                            .algorithm
                            .parameters_oid()
                            .context("PKCS#8 EC key without a named curve")?;
                        match curve {
                            P256_CURVE => {
                                Ok(PrivateKey::P256(p256::SecretKey::from_pkcs8_der(der)?))
                            }
                            P384_CURVE => {
                                Ok(PrivateKey::P384(p384::SecretKey::from_pkcs8_der(der)?))
                            }
                            other => Err(Unsupported(format!("EC curve {other}")).into()),
                        }
                    }
                    other => Err(Unsupported(curve_name(&other)).into()),
                }
            }
            other => bail!("PEM block {other:?} is not a private key"),
        }
    }

    /// Encode the key the way `label` says (the encoding the old key had).
    pub fn to_pem_der(&self, label: &str) -> Result<Vec<u8>> {
        Ok(match (label, self) {
            (PKCS1_LABEL, PrivateKey::Rsa(k)) => k.to_pkcs1_der()?.as_bytes().to_vec(),
            (SEC1_LABEL, PrivateKey::P256(k)) => k.to_sec1_der()?.to_vec(),
            (SEC1_LABEL, PrivateKey::P384(k)) => k.to_sec1_der()?.to_vec(),
            (PKCS8_LABEL, PrivateKey::Rsa(k)) => k.to_pkcs8_der()?.as_bytes().to_vec(),
            (PKCS8_LABEL, PrivateKey::P256(k)) => k.to_pkcs8_der()?.as_bytes().to_vec(),
            (PKCS8_LABEL, PrivateKey::P384(k)) => k.to_pkcs8_der()?.as_bytes().to_vec(),
            (label, k) => bail!("cannot encode a {} key as {label:?}", k.kind()),
        })
    }

    /// The label a freshly written key of this type gets.
    pub fn default_label(&self) -> &'static str {
        match self {
            PrivateKey::Rsa(_) => PKCS1_LABEL,
            _ => SEC1_LABEL,
        }
    }

    /// DER SubjectPublicKeyInfo of the public half: the key's identity in recert.
    pub fn spki_der(&self) -> Vec<u8> {
        let doc = match self {
            PrivateKey::Rsa(k) => k.to_public_key().to_public_key_der(),
            PrivateKey::P256(k) => k.public_key().to_public_key_der(),
            PrivateKey::P384(k) => k.public_key().to_public_key_der(),
        };
        doc.expect("encoding a public key").as_bytes().to_vec()
    }

    pub fn spki(&self) -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned::from_der(&self.spki_der()).expect("own SPKI parses")
    }

    /// The signature algorithm this key signs certificates with.
    pub fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        match self {
            PrivateKey::Rsa(_) => AlgorithmIdentifierOwned {
                oid: SHA256_WITH_RSA,
                parameters: Some(der::Any::from(AnyRef::NULL)),
            },
            PrivateKey::P256(_) => AlgorithmIdentifierOwned {
                oid: ECDSA_SHA256,
                parameters: None,
            },
            PrivateKey::P384(_) => AlgorithmIdentifierOwned {
                oid: ECDSA_SHA384,
                parameters: None,
            },
        }
    }

    /// Sign for an X.509 certificate (ECDSA signatures DER-encoded).
    pub fn sign_x509(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            PrivateKey::Rsa(k) => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**k).clone())
                .sign(msg)
                .to_vec(),
            PrivateKey::P256(k) => {
                let s: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(k).sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            PrivateKey::P384(k) => {
                let s: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(k).sign(msg);
                s.to_der().as_bytes().to_vec()
            }
        }
    }

    /// Sign for a JWT (JWS: ECDSA signatures as fixed-size r||s).
    pub fn sign_jws(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            PrivateKey::Rsa(_) => self.sign_x509(msg),
            PrivateKey::P256(k) => {
                let s: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(k).sign(msg);
                s.to_bytes().to_vec()
            }
            PrivateKey::P384(k) => {
                let s: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(k).sign(msg);
                s.to_bytes().to_vec()
            }
        }
    }

    pub fn jws_alg(&self) -> &'static str {
        match self {
            PrivateKey::Rsa(_) => "RS256",
            PrivateKey::P256(_) => "ES256",
            PrivateKey::P384(_) => "ES384",
        }
    }
}

/// Parse a public key block ("PUBLIC KEY" or "RSA PUBLIC KEY") to SPKI DER.
pub fn public_key_spki(label: &str, der: &[u8]) -> Result<Vec<u8>> {
    match label {
        SPKI_LABEL => {
            let spki = SubjectPublicKeyInfoOwned::from_der(der).context("parsing a public key")?;
            match spki.algorithm.oid {
                RSA_ENCRYPTION | EC_PUBLIC_KEY => Ok(der.to_vec()),
                other => Err(Unsupported(curve_name(&other)).into()),
            }
        }
        PKCS1_PUBLIC_LABEL => Ok(rsa::RsaPublicKey::from_pkcs1_der(der)
            .context("parsing a PKCS#1 RSA public key")?
            .to_public_key_der()?
            .as_bytes()
            .to_vec()),
        other => bail!("PEM block {other:?} is not a public key"),
    }
}

/// Encode a public key (given as SPKI DER) the way `label` says.
pub fn encode_public_key(label: &str, spki_der: &[u8]) -> Result<Vec<u8>> {
    match label {
        SPKI_LABEL => Ok(spki_der.to_vec()),
        PKCS1_PUBLIC_LABEL => Ok(rsa::RsaPublicKey::from_public_key_der(spki_der)?
            .to_pkcs1_der()?
            .as_bytes()
            .to_vec()),
        other => bail!("PEM block {other:?} is not a public key"),
    }
}

/// Verify a signature made over `msg` by the key in `spki_der` with algorithm `alg`; `jws`
/// selects the fixed-size ECDSA encoding JWTs use.
pub fn verify(spki_der: &[u8], alg: &ObjectIdentifier, msg: &[u8], sig: &[u8], jws: bool) -> bool {
    fn rsa_verify<D>(spki: &[u8], msg: &[u8], sig: &[u8]) -> bool
    where
        D: sha2::Digest + pkcs8::AssociatedOid,
    {
        let Ok(key) = rsa::RsaPublicKey::from_public_key_der(spki) else {
            return false;
        };
        let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig) else {
            return false;
        };
        rsa::pkcs1v15::VerifyingKey::<D>::new(key)
            .verify(msg, &sig)
            .is_ok()
    }
    match *alg {
        SHA256_WITH_RSA => rsa_verify::<sha2::Sha256>(spki_der, msg, sig),
        SHA384_WITH_RSA => rsa_verify::<sha2::Sha384>(spki_der, msg, sig),
        SHA512_WITH_RSA => rsa_verify::<sha2::Sha512>(spki_der, msg, sig),
        SHA1_WITH_RSA => rsa_verify::<sha1::Sha1>(spki_der, msg, sig),
        ECDSA_SHA256 => {
            let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(spki_der) else {
                return false;
            };
            let sig = if jws {
                p256::ecdsa::Signature::from_slice(sig)
            } else {
                p256::ecdsa::Signature::from_der(sig)
            };
            sig.is_ok_and(|s| key.verify(msg, &s).is_ok())
        }
        ECDSA_SHA384 => {
            let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(spki_der) else {
                return false;
            };
            let sig = if jws {
                p384::ecdsa::Signature::from_slice(sig)
            } else {
                p384::ecdsa::Signature::from_der(sig)
            };
            sig.is_ok_and(|s| key.verify(msg, &s).is_ok())
        }
        _ => false,
    }
}

/// The signature OID a JWS `alg` names.
pub fn jws_alg_oid(alg: &str) -> Option<ObjectIdentifier> {
    match alg {
        "RS256" => Some(SHA256_WITH_RSA),
        "RS384" => Some(SHA384_WITH_RSA),
        "RS512" => Some(SHA512_WITH_RSA),
        "ES256" => Some(ECDSA_SHA256),
        "ES384" => Some(ECDSA_SHA384),
        _ => None,
    }
}

/// The kind of the key in an SPKI, for keys recert meets only as public keys.
pub fn spki_kind(spki_der: &[u8]) -> Result<KeyKind> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)?;
    match spki.algorithm.oid {
        RSA_ENCRYPTION => Ok(KeyKind::Rsa(
            rsa::RsaPublicKey::from_public_key_der(spki_der)?.size() * 8,
        )),
        EC_PUBLIC_KEY => match spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
            .context("EC public key without a named curve")?
        {
            P256_CURVE => Ok(KeyKind::P256),
            P384_CURVE => Ok(KeyKind::P384),
            other => Err(Unsupported(format!("EC curve {other}")).into()),
        },
        other => Err(Unsupported(curve_name(&other)).into()),
    }
}

/// Re-encode an SPKI to DER (used after parsing from a certificate).
pub fn spki_to_der(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    spki.to_der().expect("encoding an SPKI")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_round_trips_and_keeps_identity() {
        for kind in [KeyKind::Rsa(1024), KeyKind::P256, KeyKind::P384] {
            let k = PrivateKey::generate(kind).unwrap();
            assert_eq!(k.kind(), kind);
            let labels: &[&str] = match kind {
                KeyKind::Rsa(_) => &[PKCS1_LABEL, PKCS8_LABEL],
                _ => &[SEC1_LABEL, PKCS8_LABEL],
            };
            for label in labels {
                let der = k.to_pem_der(label).unwrap();
                let back = PrivateKey::from_pem_der(label, &der).unwrap();
                assert_eq!(back.spki_der(), k.spki_der(), "{kind} {label}");
            }
            let msg = b"tbs";
            let sig = k.sign_x509(msg);
            assert!(verify(
                &k.spki_der(),
                &k.signature_algorithm().oid,
                msg,
                &sig,
                false
            ));
            assert!(!verify(
                &k.spki_der(),
                &k.signature_algorithm().oid,
                b"other",
                &sig,
                false
            ));
            let jws = k.sign_jws(msg);
            let oid = jws_alg_oid(k.jws_alg()).unwrap();
            assert!(verify(&k.spki_der(), &oid, msg, &jws, true));
            assert_eq!(spki_kind(&k.spki_der()).unwrap(), kind);
        }
    }

    #[test]
    fn ed25519_is_named_as_unsupported() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let k = ed25519_dalek::SigningKey::generate(&mut rand::thread_rng());
        let der = k.to_pkcs8_der().unwrap();
        let err = PrivateKey::from_pem_der(PKCS8_LABEL, der.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("Ed25519"), "{err}");
        assert!(err.downcast_ref::<Unsupported>().is_some());
    }
}

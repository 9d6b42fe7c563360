//! Private and public keys: parsing every encoding a cluster uses (PKCS#1, PKCS#8, SEC1, SPKI),
//! generating a key of the same type, signing and verifying. All of it is OpenSSL (the
//! `openssl` crate, the host's libcrypto): one crypto stack with the rest of imgmode, and
//! FIPS-capable wherever the host's OpenSSL is. The ASN.1 around the keys (OIDs, SPKI
//! structures) is `der`/`spki`.

use anyhow::{bail, ensure, Context, Result};
use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode, Encode};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::sign::{Signer, Verifier};
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

/// The smallest RSA key recert makes.
pub const MIN_RSA_BITS: usize = 2048;

/// The type and size of a key; a regenerated key always has the same kind as the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum KeyKind {
    Rsa(usize),
    P256,
    P384,
    Ed25519,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa(bits) => write!(f, "RSA {bits}"),
            KeyKind::P256 => f.write_str("EC P-256"),
            KeyKind::P384 => f.write_str("EC P-384"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// A key type recert cannot regenerate; the caller names the object it came from.
#[derive(Debug, thiserror::Error)]
#[error("unsupported key type {0}; recert regenerates RSA, EC P-256, EC P-384 and Ed25519 keys")]
pub struct Unsupported(pub String);

/// A private key (OpenSSL's), with its kind.
#[derive(Clone)]
pub struct PrivateKey {
    pkey: PKey<Private>,
    kind: KeyKind,
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

/// The kind of an OpenSSL key, or the name of a type recert does not regenerate.
fn kind_of<T: openssl::pkey::HasPublic>(
    pkey: &PKey<T>,
) -> std::result::Result<KeyKind, Unsupported> {
    match pkey.id() {
        Id::RSA => Ok(KeyKind::Rsa(pkey.bits() as usize)),
        Id::ED25519 => Ok(KeyKind::Ed25519),
        Id::ED448 => Err(Unsupported("Ed448".into())),
        Id::EC => {
            let curve = pkey.ec_key().ok().and_then(|k| k.group().curve_name());
            match curve {
                Some(Nid::X9_62_PRIME256V1) => Ok(KeyKind::P256),
                Some(Nid::SECP384R1) => Ok(KeyKind::P384),
                Some(Nid::SECP521R1) => Err(Unsupported("EC P-521".into())),
                Some(n) => Err(Unsupported(format!(
                    "EC curve {}",
                    n.short_name().unwrap_or("unknown")
                ))),
                None => Err(Unsupported("EC key without a named curve".into())),
            }
        }
        other => Err(Unsupported(format!(
            "with OpenSSL key type {}",
            other.as_raw()
        ))),
    }
}

fn ec_group(kind: KeyKind) -> Result<EcGroup> {
    let nid = match kind {
        KeyKind::P256 => Nid::X9_62_PRIME256V1,
        KeyKind::P384 => Nid::SECP384R1,
        other => bail!("{other} is not an EC curve"),
    };
    Ok(EcGroup::from_curve_name(nid)?)
}

/// The digest an ECDSA key of `kind` signs with, and its signature's half size (JWS).
fn ec_digest(kind: KeyKind) -> (MessageDigest, usize) {
    match kind {
        KeyKind::P384 => (MessageDigest::sha384(), 48),
        _ => (MessageDigest::sha256(), 32),
    }
}

impl PrivateKey {
    fn wrap(pkey: PKey<Private>) -> Result<Self> {
        let kind = kind_of(&pkey)?;
        Ok(PrivateKey { pkey, kind })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// A new key of `kind`; RSA keys of fewer than [`MIN_RSA_BITS`] bits are refused.
    pub fn generate(kind: KeyKind) -> Result<Self> {
        let pkey = match kind {
            KeyKind::Rsa(bits) => {
                ensure!(
                    bits >= MIN_RSA_BITS,
                    "an RSA {bits} key is too weak to make anew: recert makes RSA keys of at least {MIN_RSA_BITS} bits"
                );
                PKey::from_rsa(
                    Rsa::generate(bits as u32)
                        .with_context(|| format!("generating an RSA {bits} key"))?,
                )?
            }
            KeyKind::P256 | KeyKind::P384 => {
                PKey::from_ec_key(EcKey::generate(ec_group(kind)?.as_ref())?)?
            }
            KeyKind::Ed25519 => PKey::generate_ed25519()?,
        };
        Ok(PrivateKey { pkey, kind })
    }

    /// Parse a private key from a PEM block's label and DER body.
    pub fn from_pem_der(label: &str, der: &[u8]) -> Result<Self> {
        let pkey = match label {
            PKCS1_LABEL => {
                PKey::from_rsa(Rsa::private_key_from_der(der).context("parsing a PKCS#1 RSA key")?)?
            }
            SEC1_LABEL => {
                let ec = sec1::EcPrivateKey::from_der(der).context("parsing a SEC1 EC key")?;
                ensure!(
                    ec.parameters.and_then(|p| p.named_curve()).is_some(),
                    "a SEC1 EC key without a named curve; recert reads EC keys that name their curve"
                );
                PKey::from_ec_key(
                    EcKey::private_key_from_der(der).context("parsing a SEC1 EC key")?,
                )?
            }
            PKCS8_LABEL => PKey::private_key_from_pkcs8(der).context("parsing a PKCS#8 key")?,
            other => bail!("PEM block {other:?} is not a private key"),
        };
        Self::wrap(pkey)
    }

    /// Encode the key the way `label` says (the encoding the old key had).
    pub fn to_pem_der(&self, label: &str) -> Result<Vec<u8>> {
        Ok(match (label, self.kind) {
            (PKCS1_LABEL, KeyKind::Rsa(_)) => self.pkey.rsa()?.private_key_to_der()?,
            (SEC1_LABEL, KeyKind::P256 | KeyKind::P384) => {
                self.pkey.ec_key()?.private_key_to_der()?
            }
            (PKCS8_LABEL, _) => self.pkey.private_key_to_pkcs8()?,
            (label, k) => bail!("cannot encode a {k} key as {label:?}"),
        })
    }

    /// The label a freshly written key of this type gets.
    pub fn default_label(&self) -> &'static str {
        match self.kind {
            KeyKind::Rsa(_) => PKCS1_LABEL,
            KeyKind::P256 | KeyKind::P384 => SEC1_LABEL,
            KeyKind::Ed25519 => PKCS8_LABEL,
        }
    }

    /// DER SubjectPublicKeyInfo of the public half: the key's identity in recert.
    pub fn spki_der(&self) -> Vec<u8> {
        self.pkey
            .public_key_to_der()
            .expect("encoding a public key")
    }

    pub fn spki(&self) -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned::from_der(&self.spki_der()).expect("own SPKI parses")
    }

    /// The signature algorithm this key signs certificates with.
    pub fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        let (oid, parameters) = match self.kind {
            KeyKind::Rsa(_) => (SHA256_WITH_RSA, Some(der::Any::from(AnyRef::NULL))),
            KeyKind::P256 => (ECDSA_SHA256, None),
            KeyKind::P384 => (ECDSA_SHA384, None),
            KeyKind::Ed25519 => (ED25519, None),
        };
        AlgorithmIdentifierOwned { oid, parameters }
    }

    /// Sign for an X.509 certificate (ECDSA signatures DER-encoded).
    pub fn sign_x509(&self, msg: &[u8]) -> Vec<u8> {
        let mut signer = match self.kind {
            KeyKind::Rsa(_) => Signer::new(MessageDigest::sha256(), &self.pkey),
            KeyKind::P256 | KeyKind::P384 => Signer::new(ec_digest(self.kind).0, &self.pkey),
            KeyKind::Ed25519 => Signer::new_without_digest(&self.pkey),
        }
        .expect("a signer for an own key");
        signer
            .sign_oneshot_to_vec(msg)
            .expect("signing with an own key")
    }

    /// Sign for a JWT (JWS: ECDSA signatures as fixed-size r||s).
    pub fn sign_jws(&self, msg: &[u8]) -> Vec<u8> {
        let sig = self.sign_x509(msg);
        match self.kind {
            KeyKind::P256 | KeyKind::P384 => {
                let n = ec_digest(self.kind).1;
                let s = EcdsaSig::from_der(&sig).expect("OpenSSL's own ECDSA signature");
                let mut out = s.r().to_vec_padded(n as i32).expect("r fits");
                out.extend(s.s().to_vec_padded(n as i32).expect("s fits"));
                out
            }
            _ => sig,
        }
    }

    pub fn jws_alg(&self) -> &'static str {
        match self.kind {
            KeyKind::Rsa(_) => "RS256",
            KeyKind::P256 => "ES256",
            KeyKind::P384 => "ES384",
            KeyKind::Ed25519 => "EdDSA",
        }
    }
}

/// Parse a public key block ("PUBLIC KEY" or "RSA PUBLIC KEY") to SPKI DER.
pub fn public_key_spki(label: &str, der: &[u8]) -> Result<Vec<u8>> {
    match label {
        SPKI_LABEL => {
            let k = PKey::public_key_from_der(der).context("parsing a public key")?;
            kind_of(&k)?;
            Ok(der.to_vec())
        }
        PKCS1_PUBLIC_LABEL => Ok(PKey::from_rsa(
            Rsa::public_key_from_der_pkcs1(der).context("parsing a PKCS#1 RSA public key")?,
        )?
        .public_key_to_der()?),
        other => bail!("PEM block {other:?} is not a public key"),
    }
}

/// Encode a public key (given as SPKI DER) the way `label` says.
pub fn encode_public_key(label: &str, spki_der: &[u8]) -> Result<Vec<u8>> {
    match label {
        SPKI_LABEL => Ok(spki_der.to_vec()),
        PKCS1_PUBLIC_LABEL => Ok(PKey::public_key_from_der(spki_der)?
            .rsa()?
            .public_key_to_der_pkcs1()?),
        other => bail!("PEM block {other:?} is not a public key"),
    }
}

/// Verify a signature made over `msg` by the key in `spki_der` with algorithm `alg`; `jws`
/// selects the fixed-size ECDSA encoding JWTs use.
pub fn verify(spki_der: &[u8], alg: &ObjectIdentifier, msg: &[u8], sig: &[u8], jws: bool) -> bool {
    let Ok(key) = PKey::public_key_from_der(spki_der) else {
        return false;
    };
    let digest = match *alg {
        SHA256_WITH_RSA | ECDSA_SHA256 => Some(MessageDigest::sha256()),
        SHA384_WITH_RSA | ECDSA_SHA384 => Some(MessageDigest::sha384()),
        SHA512_WITH_RSA => Some(MessageDigest::sha512()),
        SHA1_WITH_RSA => Some(MessageDigest::sha1()),
        ED25519 => None,
        _ => return false,
    };
    let ecdsa = matches!(*alg, ECDSA_SHA256 | ECDSA_SHA384);
    let rsa = matches!(
        *alg,
        SHA256_WITH_RSA | SHA384_WITH_RSA | SHA512_WITH_RSA | SHA1_WITH_RSA
    );
    let key_ok = match key.id() {
        Id::RSA => rsa,
        Id::EC => ecdsa,
        Id::ED25519 => *alg == ED25519,
        _ => false,
    };
    if !key_ok {
        return false;
    }
    let der_sig;
    let sig = if jws && ecdsa {
        let n = sig.len() / 2;
        let (Ok(r), Ok(s)) = (BigNum::from_slice(&sig[..n]), BigNum::from_slice(&sig[n..])) else {
            return false;
        };
        let Ok(der) = EcdsaSig::from_private_components(r, s).and_then(|s| s.to_der()) else {
            return false;
        };
        der_sig = der;
        der_sig.as_slice()
    } else {
        sig
    };
    let verifier = match digest {
        Some(d) => Verifier::new(d, &key),
        None => Verifier::new_without_digest(&key),
    };
    verifier
        .and_then(|mut v| v.verify_oneshot(sig, msg))
        .unwrap_or(false)
}

/// The signature OID a JWS `alg` names.
pub fn jws_alg_oid(alg: &str) -> Option<ObjectIdentifier> {
    match alg {
        "RS256" => Some(SHA256_WITH_RSA),
        "RS384" => Some(SHA384_WITH_RSA),
        "RS512" => Some(SHA512_WITH_RSA),
        "ES256" => Some(ECDSA_SHA256),
        "ES384" => Some(ECDSA_SHA384),
        "EdDSA" => Some(ED25519),
        _ => None,
    }
}

/// The kind of the key in an SPKI, for keys recert meets only as public keys.
pub fn spki_kind(spki_der: &[u8]) -> Result<KeyKind> {
    let k: PKey<Public> = PKey::public_key_from_der(spki_der).context("parsing a public key")?;
    Ok(kind_of(&k)?)
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
        for kind in [
            KeyKind::Rsa(2048),
            KeyKind::P256,
            KeyKind::P384,
            KeyKind::Ed25519,
        ] {
            let k = PrivateKey::generate(kind).unwrap();
            assert_eq!(k.kind(), kind);
            let labels: &[&str] = match kind {
                KeyKind::Rsa(_) => &[PKCS1_LABEL, PKCS8_LABEL],
                KeyKind::Ed25519 => &[PKCS8_LABEL],
                _ => &[SEC1_LABEL, PKCS8_LABEL],
            };
            for label in labels {
                let der = k.to_pem_der(label).unwrap();
                let back = PrivateKey::from_pem_der(label, &der).unwrap();
                assert_eq!(back.spki_der(), k.spki_der(), "{kind} {label}");
            }
            let msg = b"tbs";
            let sig = k.sign_x509(msg);
            let alg = k.signature_algorithm().oid;
            assert!(verify(&k.spki_der(), &alg, msg, &sig, false), "{kind}");
            assert!(
                !verify(&k.spki_der(), &alg, b"other", &sig, false),
                "{kind}"
            );
            let jws = k.sign_jws(msg);
            let oid = jws_alg_oid(k.jws_alg()).unwrap();
            assert!(verify(&k.spki_der(), &oid, msg, &jws, true), "{kind}");
            assert_eq!(spki_kind(&k.spki_der()).unwrap(), kind);
        }
    }

    #[test]
    fn weak_and_unknown_keys_are_named() {
        let e = PrivateKey::generate(KeyKind::Rsa(1024)).unwrap_err();
        assert!(e.to_string().contains("at least 2048 bits"), "{e}");
        let ed448 = PKey::generate_ed448()
            .unwrap()
            .private_key_to_pkcs8()
            .unwrap();
        let err = PrivateKey::from_pem_der(PKCS8_LABEL, &ed448).unwrap_err();
        assert!(err.to_string().contains("Ed448"), "{err}");
        assert!(err.downcast_ref::<Unsupported>().is_some());
        let p521 = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP521R1).unwrap()).unwrap();
        let err =
            PrivateKey::from_pem_der(SEC1_LABEL, &p521.private_key_to_der().unwrap()).unwrap_err();
        assert!(err.to_string().contains("EC P-521"), "{err}");
    }
}

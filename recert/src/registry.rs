//! Everything the scan found, deduplicated: each certificate (by DER), private key and public key
//! (by SubjectPublicKeyInfo, so one key in PKCS#1 and PKCS#8 is one object) and JWT (by text),
//! with every location it was found in.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};

use crate::cert::Cert;
use crate::keys::{self, PrivateKey};
use crate::text::{Item, Place};

#[derive(Debug)]
pub struct CertObj {
    pub cert: Cert,
    pub locations: Vec<String>,
}

#[derive(Debug)]
pub struct KeyObj {
    pub key: PrivateKey,
    pub locations: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Registry {
    /// In the order first found.
    pub certs: Vec<CertObj>,
    cert_index: HashMap<Vec<u8>, usize>,
    pub keys: Vec<KeyObj>,
    key_index: HashMap<Vec<u8>, usize>,
    /// Public keys by SPKI DER.
    pub public_keys: Vec<(Vec<u8>, Vec<String>)>,
    public_index: HashMap<Vec<u8>, usize>,
    pub jwts: Vec<(String, Vec<String>)>,
    jwt_index: HashMap<String, usize>,
    pub warnings: Vec<String>,
}

impl Registry {
    pub fn key_by_spki(&self, spki: &[u8]) -> Option<&KeyObj> {
        self.key_index.get(spki).map(|&i| &self.keys[i])
    }

    /// Walk `text` (the contents of `container`) and record everything found in it.
    pub fn scan_text(&mut self, container: &str, text: &str, strict: bool) -> Result<()> {
        crate::text::walk(text, "", &mut |p: &Place, item: Item| {
            self.record(container, p, item, strict)?;
            Ok(None)
        })?;
        Ok(())
    }

    /// Record one item found at `container` + `place`. `strict` turns unparseable PEM into an
    /// error; unsupported key types are always errors (a key recert cannot replace would stay
    /// shared between every cluster made from the seed).
    pub fn record(
        &mut self,
        container: &str,
        place: &Place,
        item: Item,
        strict: bool,
    ) -> Result<()> {
        let loc = if place.is_empty() {
            container.to_string()
        } else {
            format!("{container} {place}")
        };
        match item {
            Item::BadPem { error, .. } => {
                if strict {
                    bail!("{loc}: {error}");
                }
                self.warnings.push(format!("skipped {loc}: {error}"));
            }
            Item::Pem {
                label: "CERTIFICATE",
                der,
                ..
            } => {
                if let Some(&i) = self.cert_index.get(&der) {
                    self.certs[i].locations.push(loc);
                    return Ok(());
                }
                match Cert::parse(&der) {
                    Ok(cert) => {
                        if let Err(e) = keys::spki_kind(&cert.spki_der) {
                            return Err(e).with_context(|| {
                                format!("certificate {} at {loc}", cert.subject())
                            });
                        }
                        self.cert_index.insert(der, self.certs.len());
                        self.certs.push(CertObj {
                            cert,
                            locations: vec![loc],
                        });
                    }
                    Err(e) if strict => return Err(e).context(loc),
                    Err(e) => self.warnings.push(format!("skipped {loc}: {e:#}")),
                }
            }
            Item::Pem { label, der, .. } if keys::is_private_key_label(label) => {
                let key = match PrivateKey::from_pem_der(label, &der) {
                    Ok(k) => k,
                    Err(e) if e.downcast_ref::<keys::Unsupported>().is_some() || strict => {
                        return Err(e).with_context(|| format!("private key at {loc}"))
                    }
                    Err(e) => {
                        self.warnings.push(format!("skipped {loc}: {e:#}"));
                        return Ok(());
                    }
                };
                let spki = key.spki_der();
                if let Some(&i) = self.key_index.get(&spki) {
                    self.keys[i].locations.push(loc);
                } else {
                    self.key_index.insert(spki, self.keys.len());
                    self.keys.push(KeyObj {
                        key,
                        locations: vec![loc],
                    });
                }
            }
            Item::Pem { label, der, .. } if keys::is_public_key_label(label) => {
                let spki = match keys::public_key_spki(label, &der) {
                    Ok(s) => s,
                    Err(e) if e.downcast_ref::<keys::Unsupported>().is_some() || strict => {
                        return Err(e).with_context(|| format!("public key at {loc}"))
                    }
                    Err(e) => {
                        self.warnings.push(format!("skipped {loc}: {e:#}"));
                        return Ok(());
                    }
                };
                if let Some(&i) = self.public_index.get(&spki) {
                    self.public_keys[i].1.push(loc);
                } else {
                    self.public_index
                        .insert(spki.clone(), self.public_keys.len());
                    self.public_keys.push((spki, vec![loc]));
                }
            }
            Item::Pem { label, .. } => {
                let e = keys::Unsupported(format!("in a {label:?} PEM block"));
                return Err(anyhow::Error::from(e)).context(format!("private key at {loc}"));
            }
            Item::Jwt(tok) => {
                if let Some(&i) = self.jwt_index.get(tok) {
                    self.jwts[i].1.push(loc);
                } else {
                    self.jwt_index.insert(tok.to_string(), self.jwts.len());
                    self.jwts.push((tok.to_string(), vec![loc]));
                }
            }
        }
        Ok(())
    }
}

//! The regeneration plan: the issuer graph (found by key identifiers and signature checks, never
//! by names), what happens to each certificate and key, and then the new objects, made from the
//! roots down so that every certificate is signed by its issuer's new key.

use std::collections::HashMap;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cert::{self, Cert, NameRewriter, Resign, ValidityPolicy};
use crate::keys::{self, KeyKind, PrivateKey};
use crate::registry::Registry;
use crate::text::B64URL;
use base64::Engine;

/// For each certificate, the index of its issuer certificate (itself when self-signed).
pub fn issuer_graph(reg: &Registry) -> Vec<Option<usize>> {
    let mut by_ski: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (i, c) in reg.certs.iter().enumerate() {
        if let Some(ski) = c.cert.subject_key_id() {
            by_ski.entry(ski).or_default().push(i);
        }
    }
    let cas: Vec<usize> = (0..reg.certs.len())
        .filter(|&i| reg.certs[i].cert.is_ca())
        .collect();
    reg.certs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.cert.signed_by(&c.cert.spki_der) {
                return Some(i);
            }
            let candidates: Vec<usize> = match c.cert.authority_key_id() {
                Some(aki) => by_ski.get(&aki).cloned().unwrap_or_default(),
                None => cas.clone(),
            };
            // Several certificates can carry the issuer's key (a renewed CA); prefer the one
            // whose subject is this certificate's issuer name.
            let signers: Vec<usize> = candidates
                .into_iter()
                .filter(|&j| j != i && c.cert.signed_by(&reg.certs[j].cert.spki_der))
                .collect();
            let issuer = c.cert.issuer();
            signers
                .iter()
                .copied()
                .find(|&j| reg.certs[j].cert.subject() == issuer)
                .or(signers.first().copied())
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertAction {
    Regenerate,
    /// Replaced as is by a `use_cert_rules` certificate.
    UseCert,
    /// Kept unchanged, with the reason.
    Keep(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAction {
    Regenerate,
    /// A `use_key_rules` key (index into the rule keys).
    UseKey(usize),
    Keep(String),
}

pub struct Decisions {
    pub issuer: Vec<Option<usize>>,
    pub certs: Vec<CertAction>,
    pub keys: Vec<KeyAction>,
    pub use_certs: Vec<Cert>,
    pub use_keys: Vec<(String, PrivateKey)>,
    pub warnings: Vec<String>,
}

impl Decisions {
    pub fn new(
        reg: &Registry,
        use_certs: Vec<Cert>,
        use_keys: Vec<(String, PrivateKey)>,
    ) -> Result<Self> {
        let issuer = issuer_graph(reg);
        let mut warnings = vec![];
        let key_of = |spki: &[u8]| reg.key_by_spki(spki).is_some();
        let mut certs = Vec::with_capacity(reg.certs.len());
        for (i, c) in reg.certs.iter().enumerate() {
            let subject = c.cert.subject();
            let action = if use_certs.iter().any(|u| u.subject() == subject) {
                CertAction::UseCert
            } else {
                match issuer[i] {
                    None => {
                        CertAction::Keep(format!("its issuer ({}) was not found", c.cert.issuer()))
                    }
                    Some(j) if key_of(&reg.certs[j].cert.spki_der) => CertAction::Regenerate,
                    Some(j) if j == i => {
                        CertAction::Keep("self-signed and its private key was not found".into())
                    }
                    Some(j) => CertAction::Keep(format!(
                        "the private key of its issuer ({}) was not found",
                        reg.certs[j].cert.subject()
                    )),
                }
            };
            if let CertAction::Keep(why) = &action {
                warnings.push(format!(
                    "kept certificate {subject} ({}): {why}",
                    c.locations[0]
                ));
            }
            certs.push(action);
        }

        let mut rule_hits = vec![false; use_keys.len()];
        let mut keys = Vec::with_capacity(reg.keys.len());
        for k in &reg.keys {
            let spki = k.key.spki_der();
            let owners: Vec<usize> = (0..reg.certs.len())
                .filter(|&i| reg.certs[i].cert.spki_der == spki)
                .collect();
            let rule = use_keys.iter().position(|(cn, _)| {
                owners
                    .iter()
                    .any(|&i| subject_cn(&reg.certs[i].cert).as_deref() == Some(cn.as_str()))
            });
            let action = if let Some(r) = rule {
                rule_hits[r] = true;
                KeyAction::UseKey(r)
            } else if let Some(&i) = owners
                .iter()
                .find(|&&i| matches!(certs[i], CertAction::Keep(_)))
            {
                KeyAction::Keep(format!(
                    "its certificate {} is kept",
                    reg.certs[i].cert.subject()
                ))
            } else if let Some(&i) = owners.iter().find(|&&i| certs[i] == CertAction::UseCert) {
                KeyAction::Keep(format!(
                    "its certificate {} is replaced by a use_cert_rules certificate",
                    reg.certs[i].cert.subject()
                ))
            } else {
                KeyAction::Regenerate
            };
            keys.push(action);
        }
        for (r, hit) in rule_hits.iter().enumerate() {
            if !*hit {
                warnings.push(format!(
                    "use_key_rules entry for CN {:?} matched no certificate whose private key was found",
                    use_keys[r].0
                ));
            }
        }
        for u in &use_certs {
            if !reg.certs.iter().any(|c| c.cert.subject() == u.subject()) {
                warnings.push(format!(
                    "use_cert_rules certificate {} matched no certificate",
                    u.subject()
                ));
            }
        }
        Ok(Decisions {
            issuer,
            certs,
            keys,
            use_certs,
            use_keys,
            warnings,
        })
    }

    /// How many new keys of each kind the plan needs.
    pub fn needs(&self, reg: &Registry) -> HashMap<KeyKind, usize> {
        let mut n = HashMap::new();
        for (k, a) in reg.keys.iter().zip(&self.keys) {
            if *a == KeyAction::Regenerate {
                *n.entry(k.key.kind()).or_default() += 1;
            }
        }
        n
    }
}

pub fn subject_cn(c: &Cert) -> Option<String> {
    const CN: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    c.cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == CN)
        .and_then(|atv| std::str::from_utf8(atv.value.value()).ok())
        .map(str::to_string)
}

/// Old object -> new object, for the rewrite.
#[derive(Default)]
pub struct Plan {
    pub certs: HashMap<Vec<u8>, Vec<u8>>,
    pub keys: HashMap<Vec<u8>, PrivateKey>,
    pub public_keys: HashMap<Vec<u8>, Vec<u8>>,
    pub jwts: HashMap<String, String>,
    pub report: Vec<CertReport>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertReport {
    pub subject: String,
    pub issuer: String,
    pub new_subject: Option<String>,
    pub new_sans: Vec<String>,
    pub key: String,
    pub action: CertAction,
    pub locations: Vec<String>,
    /// The new certificate in PEM (public material).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
}

/// The Kubernetes key ID of a service-account signing key: base64url(SHA-256(SPKI DER)).
pub fn kube_kid(spki_der: &[u8]) -> String {
    B64URL.encode(openssl::sha::sha256(spki_der))
}

/// What re-signing a certificate needs besides the decisions: the registry, the new key of
/// every old key (by SPKI DER) and how names and validity dates change.
struct Resigning<'a> {
    reg: &'a Registry,
    new_key: &'a HashMap<Vec<u8>, PrivateKey>,
    names: &'a dyn NameRewriter,
    validity: ValidityPolicy,
    now: SystemTime,
}

impl Decisions {
    pub fn execute(
        mut self,
        reg: &Registry,
        generated: HashMap<KeyKind, Vec<PrivateKey>>,
        names: &dyn NameRewriter,
        validity: ValidityPolicy,
        now: SystemTime,
    ) -> Result<Plan> {
        let mut plan = Plan {
            warnings: std::mem::take(&mut self.warnings),
            ..Default::default()
        };
        let new_key = self.new_keys(reg, generated, &mut plan)?;
        let cx = Resigning {
            reg,
            new_key: &new_key,
            names,
            validity,
            now,
        };
        self.certs_roots_first(&cx, &mut plan)?;
        public_keys(reg, &new_key, &mut plan);
        jwts(reg, &new_key, &mut plan)?;
        Ok(plan)
    }

    /// The new key of every old key (identity when kept), by the old key's SPKI DER; the keys
    /// that change go into `plan`.
    fn new_keys(
        &self,
        reg: &Registry,
        mut generated: HashMap<KeyKind, Vec<PrivateKey>>,
        plan: &mut Plan,
    ) -> Result<HashMap<Vec<u8>, PrivateKey>> {
        let mut new_key: HashMap<Vec<u8>, PrivateKey> = HashMap::new();
        for (k, a) in reg.keys.iter().zip(&self.keys) {
            let spki = k.key.spki_der();
            let nk = match a {
                KeyAction::Regenerate => generated
                    .get_mut(&k.key.kind())
                    .and_then(|v| v.pop())
                    .ok_or_else(|| anyhow!("key pool ran out of {} keys", k.key.kind()))?,
                KeyAction::UseKey(r) => self.use_keys[*r].1.clone(),
                KeyAction::Keep(_) => k.key.clone(),
            };
            if nk.spki_der() != spki {
                plan.keys.insert(spki.clone(), nk.clone());
            }
            new_key.insert(spki, nk);
        }
        // use_cert_rules certificates sign with the key matching their public key.
        for u in &self.use_certs {
            if let Some(k) = reg.key_by_spki(&u.spki_der) {
                new_key.entry(u.spki_der.clone()).or_insert(k.key.clone());
            }
        }
        Ok(new_key)
    }

    /// Certificates, roots first: each is made once its issuer's new certificate exists.
    fn certs_roots_first(&self, cx: &Resigning, plan: &mut Plan) -> Result<()> {
        let reg = cx.reg;
        let n = reg.certs.len();
        let mut new_cert: Vec<Option<Cert>> = vec![None; n];
        let mut done = vec![false; n];
        let mut remaining: Vec<usize> = (0..n).collect();
        while !remaining.is_empty() {
            let before = remaining.len();
            let mut next = vec![];
            for i in remaining {
                let ready = match (&self.certs[i], self.issuer[i]) {
                    (CertAction::Regenerate, Some(j)) => j == i || done[j],
                    _ => true,
                };
                if !ready {
                    next.push(i);
                    continue;
                }
                let old = &reg.certs[i].cert;
                let result = match &self.certs[i] {
                    CertAction::Keep(_) => old.clone(),
                    CertAction::UseCert => self
                        .use_certs
                        .iter()
                        .find(|u| u.subject() == old.subject())
                        .expect("decided from this list")
                        .clone(),
                    CertAction::Regenerate => {
                        self.regenerate(cx, i, &new_cert, &mut plan.warnings)?
                    }
                };
                if result.der != old.der {
                    plan.certs.insert(old.der.clone(), result.der.clone());
                }
                plan.report.push(self.cert_report(reg, i, &result));
                new_cert[i] = Some(result);
                done[i] = true;
            }
            if next.len() == before {
                bail!(
                    "the issuer graph has a cycle through {}",
                    reg.certs[next[0]].cert.subject()
                );
            }
            remaining = next;
        }
        Ok(())
    }

    /// Re-sign certificate `i` with its new key (or its old public key when its private key
    /// was not found) by its issuer's new key; `new_cert` holds its issuer's new certificate.
    fn regenerate(
        &self,
        cx: &Resigning,
        i: usize,
        new_cert: &[Option<Cert>],
        warnings: &mut Vec<String>,
    ) -> Result<Cert> {
        let reg = cx.reg;
        let old = &reg.certs[i].cert;
        let j = self.issuer[i].expect("regenerated certificates have an issuer");
        let own = cx.new_key.get(&old.spki_der);
        let spki = match own {
            Some(k) => k.spki(),
            None => {
                warnings.push(format!(
                    "certificate {} ({}): its private key was not found, so it keeps its public key",
                    old.subject(),
                    reg.certs[i].locations[0]
                ));
                old.cert.tbs_certificate.subject_public_key_info.clone()
            }
        };
        let issuer_old = &reg.certs[j].cert;
        let signer = cx
            .new_key
            .get(&issuer_old.spki_der)
            .ok_or_else(|| anyhow!("no key for issuer {}", issuer_old.subject()))?;
        let (issuer_name, issuer_key_id) = if j == i {
            (
                cert::rewrite_name(&old.cert.tbs_certificate.subject, cx.names)?,
                Some(cert::key_id(&spki)),
            )
        } else {
            let ni = new_cert[j].as_ref().expect("issuer done first");
            (
                ni.cert.tbs_certificate.subject.clone(),
                Some(ni.subject_key_id().unwrap_or_else(|| {
                    cert::key_id(&ni.cert.tbs_certificate.subject_public_key_info)
                })),
            )
        };
        let der = cert::resign(
            old,
            &Resign {
                spki,
                issuer_name,
                issuer_key_id,
                signer,
                names: cx.names,
                validity: cx.validity,
                now: cx.now,
            },
        )
        .with_context(|| format!("re-signing {}", old.subject()))?;
        Cert::parse(&der)
    }

    /// The report of certificate `i`, which became `result`.
    fn cert_report(&self, reg: &Registry, i: usize, result: &Cert) -> CertReport {
        let old = &reg.certs[i].cert;
        CertReport {
            subject: old.subject(),
            issuer: old.issuer(),
            new_subject: (result.subject() != old.subject()).then(|| result.subject()),
            new_sans: if result.der != old.der {
                result.sans()
            } else {
                vec![]
            },
            key: keys::spki_kind(&old.spki_der)
                .map(|k| k.to_string())
                .unwrap_or_else(|e| e.to_string()),
            action: self.certs[i].clone(),
            locations: reg.certs[i].locations.clone(),
            pem: (result.der != old.der)
                .then(|| crate::text::pem_encode("CERTIFICATE", &result.der)),
        }
    }
}

/// Public keys follow their private keys.
fn public_keys(reg: &Registry, new_key: &HashMap<Vec<u8>, PrivateKey>, plan: &mut Plan) {
    for (spki, locs) in &reg.public_keys {
        match new_key.get(spki) {
            Some(k) if k.spki_der() != *spki => {
                plan.public_keys.insert(spki.clone(), k.spki_der());
            }
            Some(_) => {}
            None => plan.warnings.push(format!(
                "kept public key at {}: its private key was not found",
                locs[0]
            )),
        }
    }
}

/// JWTs are re-signed by the new key of whichever key signed them.
fn jwts(reg: &Registry, new_key: &HashMap<Vec<u8>, PrivateKey>, plan: &mut Plan) -> Result<()> {
    let candidates: Vec<(&Vec<u8>, &PrivateKey)> = new_key.iter().collect();
    for (tok, locs) in &reg.jwts {
        match resign_jwt(tok, &candidates)? {
            Some(new) => {
                plan.jwts.insert(tok.clone(), new);
            }
            None => plan.warnings.push(format!(
                "kept JWT at {}: its signing key was not found",
                locs[0]
            )),
        }
    }
    Ok(())
}

/// Re-sign a JWT with the new key of the old key that signed it; `None` when no known key did.
fn resign_jwt(tok: &str, keys: &[(&Vec<u8>, &PrivateKey)]) -> Result<Option<String>> {
    let mut parts = tok.split('.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    let header: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(h)?).context("parsing a JWT header")?;
    let Some(alg) = header
        .get("alg")
        .and_then(|a| a.as_str())
        .and_then(keys::jws_alg_oid)
    else {
        return Ok(None);
    };
    let sig = B64URL.decode(s)?;
    let signed = &tok[..h.len() + 1 + p.len()];
    let Some((old_spki, new)) = keys
        .iter()
        .find(|(spki, _)| keys::verify(spki, &alg, signed.as_bytes(), &sig, true))
    else {
        return Ok(None);
    };
    let mut header = header.clone();
    header["alg"] = new.jws_alg().into();
    if header.get("kid").and_then(|k| k.as_str()) == Some(kube_kid(old_spki).as_str()) {
        header["kid"] = kube_kid(&new.spki_der()).into();
    }
    let h2 = B64URL.encode(serde_json::to_vec(&header)?);
    let msg = format!("{h2}.{p}");
    let sig = new.sign_jws(msg.as_bytes());
    Ok(Some(format!("{msg}.{}", B64URL.encode(sig))))
}

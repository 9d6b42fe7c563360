//! recert: regenerate every certificate, private key and JWT of a cluster copy and rename it,
//! so that no two hosts made from one seed share a secret.
//!
//! The flow of [`run`]:
//!
//! 1. connect to etcd first (an unreachable etcd fails the run before anything is touched) and
//!    start the key-generation pool ([`keypool`]), which works while the scan runs;
//! 2. scan etcd objects ([`etcd`]) and files ([`filesystem`]) with one text walker
//!    ([`text`]) into a deduplicated [`registry`];
//! 3. decide, per certificate and key, what happens, and make the new objects from the roots
//!    down ([`plan`]), applying the name rules ([`rename`]);
//! 4. write the plan's journal (every new object and file, 0600, synced), then rewrite every
//!    location (temp file + rename; one etcd transaction per object), unless `dry_run`;
//!    replace SSH host keys ([`ssh`]); write the [`summary`] and delete the journal. A run that
//!    finds a journal finishes it instead of planning again (`journal.rs`).

pub mod cert;
pub mod config;
pub mod encryption;
pub mod etcd;
pub mod filesystem;
mod journal;
pub mod keypool;
pub mod keys;
pub mod kpb;
pub mod plan;
pub mod registry;
pub mod rename;
pub mod ssh;
pub mod summary;
pub mod text;

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};

use cert::{Cert, ValidityPolicy};
use config::Checked;
use imgmode_support::runtime::block_on;
use keys::PrivateKey;
use plan::{KeyAction, Plan};
use registry::Registry;
use rename::{Match, Renamer};
use summary::{ClusterRenameReport, Counts, JwtReport, KeyReport, Summary, Timings};
use text::{Item, Place};

pub use config::RecertConfig;

/// How many RSA 2048 keys the pool may make before the scan says what it needs.
const SPECULATIVE_KEYS: usize = 1024;

/// Certificates of `use_cert_rules`, and `use_key_rules` keys with the CN they are for.
type UseRules = (Vec<Cert>, Vec<(String, PrivateKey)>);

fn read_use_rules(c: &Checked) -> Result<UseRules> {
    let mut certs = vec![];
    for p in &c.cfg.use_cert_rules {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading use_cert_rules file {}", p.display()))?;
        let mut found = vec![];
        text::walk(&text, "", &mut |_p: &Place, item: Item| {
            if let Item::Pem { label, der, .. } = item {
                if label == "CERTIFICATE" {
                    found.push(Cert::parse(&der)?);
                }
            }
            Ok(None)
        })?;
        match found.len() {
            1 => certs.push(found.remove(0)),
            n => bail!(
                "use_cert_rules file {} holds {n} certificates; expected exactly one",
                p.display()
            ),
        }
    }
    let mut keys = vec![];
    for r in &c.use_keys {
        let text = std::fs::read_to_string(&r.key_file)
            .with_context(|| format!("reading use_key_rules key {}", r.key_file.display()))?;
        let mut found = vec![];
        text::walk(&text, "", &mut |_p: &Place, item: Item| {
            if let Item::Pem { label, der, .. } = item {
                if keys::is_private_key_label(label) {
                    found.push(PrivateKey::from_pem_der(label, &der)?);
                }
            }
            Ok(None)
        })
        .with_context(|| format!("reading use_key_rules key {}", r.key_file.display()))?;
        match found.len() {
            1 => keys.push((r.cn.clone(), found.remove(0))),
            n => bail!(
                "use_key_rules file {} holds {n} private keys; expected exactly one",
                r.key_file.display()
            ),
        }
    }
    Ok((certs, keys))
}

/// The cluster's current `name.domain`, from etcd's install-config or else from an `api.` SAN.
fn current_cluster(
    objects: &[etcd::EtcdObject],
    reg: &Registry,
) -> Option<(String, String, Option<String>)> {
    if let Some(id) = etcd::cluster_identity(objects) {
        return Some(id);
    }
    reg.certs
        .iter()
        .flat_map(|c| c.cert.sans())
        .find_map(|san| {
            let rest = san.strip_prefix("api.")?;
            let (name, domain) = rest.split_once('.')?;
            Some((name.to_string(), domain.to_string(), None))
        })
}

fn build_renamer(
    c: &Checked,
    objects: &[etcd::EtcdObject],
    reg: &Registry,
) -> Result<(Renamer, Option<ClusterRenameReport>)> {
    let mut r = Renamer::default();
    for rule in &c.cn_san_rules {
        r.add(
            "cn_san_replace_rules",
            &rule.old,
            &rule.new,
            Match::Exact,
            false,
        );
    }
    let mut report = None;
    if let Some(new) = &c.rename {
        let (name, domain, infra) = current_cluster(objects, reg).ok_or_else(|| {
            anyhow!("cluster_rename: cannot tell the cluster's current name: no install-config in etcd (kube-system/cluster-config-v1) and no api.<name>.<domain> SAN in any certificate")
        })?;
        let from = format!("{name}.{domain}");
        let to = format!("{}.{}", new.name, new.domain);
        r.add(
            "cluster_rename",
            &format!(".{from}"),
            &format!(".{to}"),
            Match::Substring,
            true,
        );
        if let Some(new_infra) = &new.infra_id {
            match infra {
                Some(old) => r.add("cluster_rename infra ID", &old, new_infra, Match::Substring, true),
                None => bail!("cluster_rename gives an infra ID but the current one is unknown (no infrastructures/cluster object in etcd)"),
            }
        }
        report = Some(ClusterRenameReport { from, to });
    }
    if c.cfg.hostname.is_some() || c.cfg.ip.is_some() {
        let (old_host, old_ip) = etcd::node_identity(objects)
            .context("hostname/ip changes")?
            .ok_or_else(|| anyhow!("hostname/ip: no node object under {} in etcd", etcd::NODES))?;
        if let Some(h) = &c.cfg.hostname {
            r.add("hostname", &old_host, h, Match::Exact, false);
            r.add(
                "hostname in identities",
                &format!(":{old_host}"),
                &format!(":{h}"),
                Match::Suffix,
                false,
            );
        }
        if let Some(ip) = &c.cfg.ip {
            let old = old_ip
                .ok_or_else(|| anyhow!("ip: the node object in etcd has no InternalIP address"))?;
            r.add("ip", &old, ip, Match::Exact, false);
        }
    }
    Ok((r, report))
}

fn map_visitor<'a>(plan: &'a Plan) -> impl FnMut(&Place, Item) -> Result<Option<String>> + 'a {
    move |_p: &Place, item: Item| {
        Ok(match item {
            Item::Pem { label, der, .. } if label == "CERTIFICATE" => {
                plan.certs.get(&der).map(|new| text::pem_encode(label, new))
            }
            Item::Pem { label, der, .. } if keys::is_private_key_label(label) => {
                let spki = PrivateKey::from_pem_der(label, &der)?.spki_der();
                match plan.keys.get(&spki) {
                    Some(k) => Some(text::pem_encode(label, &k.to_pem_der(label)?)),
                    None => None,
                }
            }
            Item::Pem { label, der, .. } if keys::is_public_key_label(label) => {
                let spki = keys::public_key_spki(label, &der)?;
                match plan.public_keys.get(&spki) {
                    Some(new) => Some(text::pem_encode(
                        label,
                        &keys::encode_public_key(label, new)?,
                    )),
                    None => None,
                }
            }
            Item::Jwt(t) => plan.jwts.get(t).cloned(),
            _ => None,
        })
    }
}

/// Every private key of a cluster (files under `static_dirs`, secrets and configmaps in etcd):
/// `(sha256 of its public key's SPKI DER, first location)`, sorted. Two clusters share a key
/// exactly when they share a fingerprint.
pub fn key_inventory(
    static_dirs: &[std::path::PathBuf],
    etcd_endpoint: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let mut reg = Registry::default();
    if let Some(e) = etcd_endpoint {
        let objects = block_on(async {
            let mut etcd = etcd::Etcd::connect(e).await?;
            etcd.scan().await
        })??;
        for obj in &objects {
            for f in obj.fields() {
                reg.scan_text(&obj.location(&f), &f.text, false)?;
            }
        }
    }
    for f in filesystem::scan(static_dirs, &[])? {
        reg.scan_text(&f.location(), &f.text, false)?;
    }
    let mut out: Vec<(String, String)> = reg
        .keys
        .iter()
        .map(|k| {
            (
                hex::encode(openssl::sha::sha256(&k.key.spki_der())),
                k.locations.first().cloned().unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// etcd at `endpoint`, with the configuration's encryption keys when it names them.
fn connect(c: &Checked, endpoint: &str) -> Result<etcd::Etcd> {
    let e = block_on(etcd::Etcd::connect(endpoint))??;
    Ok(match &c.cfg.encryption_config {
        Some(p) => e.with_encryption(std::sync::Arc::new(encryption::EncryptionKeys::load(p)?)),
        None => e,
    })
}

/// Run recert. The summary is also written where the configuration says.
pub fn run(c: &Checked) -> Result<Summary> {
    run_with_pool(c, None)
}

/// A key pool for [`run_with_pool`], started now: its workers make RSA 2048 keys (a
/// cluster's most common kind) until the run says what it needs.
pub fn start_key_pool(threads: usize) -> keypool::KeyPool {
    keypool::KeyPool::start(threads, SPECULATIVE_KEYS)
}

/// `pool` grown to the configuration's threads, or a new one.
fn pool_of(c: &Checked, pool: Option<keypool::KeyPool>) -> keypool::KeyPool {
    match pool {
        Some(mut p) => {
            p.grow_to(c.threads);
            p
        }
        None => start_key_pool(c.threads),
    }
}

/// [`run`], taking its keys from `pool` when given (started earlier by [`start_key_pool`],
/// grown to the configuration's threads); a run resumed from its journal needs none.
pub fn run_with_pool(c: &Checked, pool: Option<keypool::KeyPool>) -> Result<Summary> {
    let t0 = Instant::now();
    let journal_path = journal::path(&c.cfg).filter(|_| !c.cfg.dry_run);
    if let Some(p) = journal_path.as_ref().filter(|p| p.exists()) {
        return resume(c, p);
    }
    refuse_rerun(c)?;
    let (use_certs, use_keys) = read_use_rules(c)?;
    let mut etcd = match &c.cfg.etcd_endpoint {
        Some(e) => Some(connect(c, e)?),
        None => None,
    };

    let pool = pool_of(c, pool);
    let (reg, mut objects, files, etcd_values) = scan(c, etcd.as_mut())?;
    let scan_ms = t0.elapsed().as_millis();

    let (renamer, rename_report) = build_renamer(c, &objects, &reg)?;
    let decisions = plan::Decisions::new(&reg, use_certs, use_keys)?;
    let needs = decisions.needs(&reg);
    let key_actions = decisions.keys.clone();
    let generated = pool.finish(&needs).context("generating keys")?;

    let t_proc = Instant::now();
    let plan = decisions.execute(
        &reg,
        generated.keys,
        &renamer,
        validity_policy(c),
        SystemTime::now(),
    )?;
    // New contents of every container that changes.
    let new_files = rewrite_files(&plan, &renamer, &files)?;
    let changed_objects = rewrite_objects(&plan, &renamer, &mut objects)?;
    let processing_ms = t_proc.elapsed().as_millis();

    let rules = renamer.report();
    let warnings = warnings(&reg, &plan, &rules);
    let mut summary = Summary {
        tool: format!("imgmode-recert {}", env!("CARGO_PKG_VERSION")),
        dry_run: c.cfg.dry_run,
        threads: c.threads,
        cluster_rename: rename_report,
        found: Counts {
            certificates: reg.certs.len(),
            private_keys: reg.keys.len(),
            public_keys: reg.public_keys.len(),
            jwts: reg.jwts.len(),
        },
        regenerated: Counts {
            certificates: plan.certs.len(),
            private_keys: plan.keys.len(),
            public_keys: plan.public_keys.len(),
            jwts: plan.jwts.len(),
        },
        ssh_host_keys_regenerated: vec![],
        locations_by_kind: locations_by_kind(&reg),
        etcd_values,
        rules,
        certificates: plan.report.clone(),
        private_keys: key_reports(&reg, &key_actions),
        jwts: jwt_reports(&reg, &plan),
        written: planned_writes(&changed_objects, &new_files),
        warnings,
        timings: Timings {
            scan_ms,
            key_generation_ms: generated.total.as_millis(),
            key_generation_wait_ms: generated.wait.as_millis(),
            processing_ms,
            ..Default::default()
        },
    };
    if c.cfg.dry_run {
        for w in &mut summary.written {
            w.push_str(" (dry run)");
        }
        summary.ssh_host_keys_regenerated = ssh_host_keys(c)?;
    } else {
        let t_commit = Instant::now();
        let j = journal::Journal {
            objects: changed_objects,
            files: new_files,
            summary: summary.clone(),
        };
        if let Some(p) = &journal_path {
            j.save(p)?;
        }
        let mut done = vec![];
        let applied = journal::apply(
            etcd.as_mut(),
            &j.objects,
            &j.files,
            false,
            c.cfg.interrupt_after_writes,
            &mut done,
        );
        if let Err(e) = applied {
            // nothing was written (an etcd object changed under recert, say): the plan goes,
            // and the next run plans again from what is there
            if done.is_empty() {
                if let Some(p) = &journal_path {
                    journal::Journal::remove(p)?;
                }
            }
            return Err(e);
        }
        summary.ssh_host_keys_regenerated = ssh_host_keys(c)?;
        summary.timings.commit_ms = t_commit.elapsed().as_millis();
    }
    summary.timings.total_ms = t0.elapsed().as_millis();
    finish(c, &summary, journal_path.as_deref())?;
    Ok(summary)
}

/// The SSH host keys `regenerate_server_ssh_keys` names, replaced (listed only on a dry run).
fn ssh_host_keys(c: &Checked) -> Result<Vec<String>> {
    match &c.cfg.regenerate_server_ssh_keys {
        Some(dir) => ssh::regenerate_host_keys(dir, c.cfg.dry_run),
        None => Ok(vec![]),
    }
}

/// A run interrupted in its commit: its journal's writes made again, then its summary.
fn resume(c: &Checked, path: &std::path::Path) -> Result<Summary> {
    let j = journal::Journal::load(path)?;
    let mut etcd = match (&c.cfg.etcd_endpoint, j.objects.is_empty()) {
        (Some(e), false) => Some(connect(c, e)?),
        _ => None,
    };
    journal::apply(
        etcd.as_mut(),
        &j.objects,
        &j.files,
        true,
        c.cfg.interrupt_after_writes,
        &mut vec![],
    )?;
    let mut summary = j.summary;
    summary.ssh_host_keys_regenerated = ssh_host_keys(c)?;
    summary.warnings.push(format!(
        "resumed an interrupted run from its plan {}: every planned write made again",
        path.display()
    ));
    finish(c, &summary, Some(path))?;
    Ok(summary)
}

/// The summaries written (the summary file is the mark of a finished run), then the journal
/// deleted.
fn finish(c: &Checked, summary: &Summary, journal: Option<&std::path::Path>) -> Result<()> {
    if let Some(p) = &c.cfg.summary_file {
        summary.write(p, false)?;
    }
    if let Some(p) = &c.cfg.summary_file_clean {
        summary.write(p, true)?;
    }
    if let Some(p) = journal.filter(|p| p.exists()) {
        journal::Journal::remove(p)?;
    }
    Ok(())
}

/// What the commit writes, in its order: `etcd KEY`, then `file PATH`.
fn planned_writes(
    objects: &[etcd::EtcdObject],
    files: &[(std::path::PathBuf, String)],
) -> Vec<String> {
    objects
        .iter()
        .map(|o| format!("etcd {}", o.key))
        .chain(files.iter().map(|(p, _)| format!("file {}", p.display())))
        .collect()
}

/// A tree whose summary file exists was already recerted: refuse unless `force_rerun`.
fn refuse_rerun(c: &Checked) -> Result<()> {
    if let Some(sf) = &c.cfg.summary_file {
        if sf.exists() && !c.cfg.force_rerun {
            bail!(
                "{} exists: this tree was already recerted; recert refuses to run twice (set force_rerun to run anyway)",
                sf.display()
            );
        }
    }
    Ok(())
}

/// Scan etcd's objects (when connected) and the configured files into one registry.
type Scanned = (
    Registry,
    Vec<etcd::EtcdObject>,
    Vec<filesystem::TextFile>,
    BTreeMap<String, usize>,
);

fn scan(c: &Checked, etcd: Option<&mut etcd::Etcd>) -> Result<Scanned> {
    let strict = c.cfg.fail_on_invalid_pem;
    let mut reg = Registry::default();
    let (objects, encodings) = match etcd {
        Some(e) => block_on(e.scan_values(c.cfg.skip_unreadable_values))??,
        None => (vec![], BTreeMap::new()),
    };
    for obj in &objects {
        for f in obj.fields() {
            reg.scan_text(&obj.location(&f), &f.text, strict)?;
        }
    }
    let files = filesystem::scan(&c.cfg.static_dirs, &c.cfg.static_files)?;
    for f in &files {
        reg.scan_text(&f.location(), &f.text, strict)?;
    }
    Ok((reg, objects, files, encodings))
}

fn validity_policy(c: &Checked) -> ValidityPolicy {
    if c.cfg.force_expire {
        ValidityPolicy::ForceExpire
    } else if c.cfg.extend_expiration {
        ValidityPolicy::Extend
    } else {
        ValidityPolicy::Keep
    }
}

/// The new text of every file that changes.
fn rewrite_files(
    plan: &Plan,
    renamer: &Renamer,
    files: &[filesystem::TextFile],
) -> Result<Vec<(std::path::PathBuf, String)>> {
    let mut new_files = vec![];
    for f in files {
        let mut new = text::walk(&f.text, "", &mut map_visitor(plan))
            .with_context(|| format!("rewriting {}", f.path.display()))?;
        if text::is_kubeconfig(&new) {
            new = renamer.rewrite_text(&new);
        }
        if new != f.text {
            new_files.push((f.path.clone(), new));
        }
    }
    Ok(new_files)
}

/// Rewrite the fields of every etcd object in place; returns the objects that changed.
fn rewrite_objects(
    plan: &Plan,
    renamer: &Renamer,
    objects: &mut [etcd::EtcdObject],
) -> Result<Vec<etcd::EtcdObject>> {
    let mut changed_objects = vec![];
    for obj in objects.iter_mut() {
        let mut changed = false;
        for field in obj.fields() {
            let mut new = text::walk(&field.text, "", &mut map_visitor(plan))
                .with_context(|| format!("rewriting {}", obj.location(&field)))?;
            if obj.is_configmap() || text::is_kubeconfig(&new) {
                new = renamer.rewrite_text(&new);
            }
            if new != field.text {
                obj.set_field(&field, &new);
                changed = true;
            }
        }
        if changed {
            changed_objects.push(obj.clone());
        }
    }
    Ok(changed_objects)
}

/// The scan's and the plan's warnings, then one per name rule that matched nothing.
fn warnings(reg: &Registry, plan: &Plan, rules: &[rename::RuleReport]) -> Vec<String> {
    let mut warnings = reg.warnings.clone();
    warnings.extend(plan.warnings.iter().cloned());
    for r in rules {
        if r.matches == 0 {
            warnings.push(format!(
                "{} rule {} -> {} matched nothing",
                r.rule, r.old, r.new
            ));
        }
    }
    warnings
}

/// How many locations of each kind (`file`, `etcd`, ...) hold something found.
fn locations_by_kind(reg: &Registry) -> BTreeMap<String, usize> {
    let mut by_kind = BTreeMap::new();
    let all_locations = reg
        .certs
        .iter()
        .flat_map(|c| &c.locations)
        .chain(reg.keys.iter().flat_map(|k| &k.locations))
        .chain(reg.public_keys.iter().flat_map(|p| &p.1))
        .chain(reg.jwts.iter().flat_map(|j| &j.1));
    for l in all_locations {
        let kind = l.split(' ').next().unwrap_or("?").to_string();
        *by_kind.entry(kind).or_insert(0) += 1;
    }
    by_kind
}

/// What happened to each private key found.
fn key_reports(reg: &Registry, key_actions: &[KeyAction]) -> Vec<KeyReport> {
    reg.keys
        .iter()
        .zip(key_actions)
        .map(|(k, a)| KeyReport {
            kind: k.key.kind().to_string(),
            action: match a {
                KeyAction::Regenerate => "regenerated".into(),
                KeyAction::UseKey(_) => "replaced by a use_key_rules key".into(),
                KeyAction::Keep(why) => format!("kept: {why}"),
            },
            locations: k.locations.clone(),
        })
        .collect()
}

/// Each JWT found, redacted, and whether it was re-signed.
fn jwt_reports(reg: &Registry, plan: &Plan) -> Vec<JwtReport> {
    reg.jwts
        .iter()
        .map(|(t, l)| JwtReport {
            token: "<redacted>".into(),
            regenerated: plan.jwts.contains_key(t),
            locations: l.clone(),
        })
        .collect()
}

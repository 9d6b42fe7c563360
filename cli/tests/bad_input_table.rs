//! Bad input, table-driven: one call site ([`every_bad_input_is_refused_and_nothing_is_written`])
//! runs every row against the real `imgmode` binary, as a new user would type it.
//!
//! A row is a verb and its arguments, the files it needs, the exact exit status (1 for a
//! refusal, 2 for a usage error), and a fragment of the message. For every row the test checks:
//!
//! - the exit status, and `error: …` (or clap's usage text for 2) on stderr with the fragment;
//! - nothing on stdout;
//! - the message is terminal-safe: no control character but newline and tab, no line longer
//!   than the CLI prints whole (values are cut and escaped);
//! - nothing written: a snapshot of the row's directory (every path, type, size, mode and
//!   modification time) is the same before and after, and so is the shared fixtures' one at
//!   the end (so a verb reading a fixture never changes it).
//!
//! `@D` in a row stands for its own directory (the working directory of the run, and where its
//! files are written), `@F` for the shared fixtures (OCI layouts, a payload), built once.
//! Rows that read an image through skopeo or need root say so; without what they need they fail
//! in strict mode (`IMGMODE_TEST_STRICT=1`, as CI runs) and are counted as skipped otherwise.

mod common;
use common::{put_blob, rewrite_layout, tar_of, write_oci, write_oci_layers, Need};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "bad_input_rows/mod.rs"]
mod rows;
use rows::all_rows;

/// A file a row writes into its directory before the run: (relative path, content); a path
/// ending in `/` is a directory.
type File = (String, String);

/// One bad input.
pub struct Row {
    pub args: Vec<String>,
    pub files: Vec<File>,
    /// Extra preparation of the row's directory (copies and edits of fixtures).
    pub prep: Option<fn(&Path, &Path)>,
    pub exit: i32,
    pub says: String,
    pub needs: Vec<Need>,
    /// Environment variables of the run (`@D`, `@F` replaced).
    pub env: Vec<(String, String)>,
}

/// A row: exit status, message fragment, arguments.
pub fn row(exit: i32, says: &str, args: &[&str]) -> Row {
    Row {
        args: args.iter().map(|s| s.to_string()).collect(),
        files: vec![],
        prep: None,
        exit,
        says: says.to_string(),
        needs: vec![],
        env: vec![],
    }
}

impl Row {
    pub fn file(mut self, path: &str, content: &str) -> Self {
        self.files.push((path.to_string(), content.to_string()));
        self
    }
    pub fn dir(self, path: &str) -> Self {
        self.file(&format!("{path}/"), "")
    }
    pub fn prep(mut self, f: fn(&Path, &Path)) -> Self {
        self.prep = Some(f);
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    pub fn needs(mut self, n: Need) -> Self {
        self.needs.push(n);
        self
    }
}

/// Does the row read the shared fixtures (`@F`, or a preparation that copies them)?
fn uses_fixtures(r: &Row) -> bool {
    r.prep.is_some()
        || r.says.contains("@F")
        || r.args.iter().any(|a| a.contains("@F"))
        || r.files.iter().any(|(_, c)| c.contains("@F"))
        || r.env.iter().any(|(_, v)| v.contains("@F"))
}

/// `@D` and `@F` replaced.
fn subst(s: &str, d: &Path, f: &Path) -> String {
    s.replace("@D", d.to_str().unwrap())
        .replace("@F", f.to_str().unwrap())
}

/// Every path under `dir` (not following symlinks) with its type, size, mode and mtime.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            let size = if m.is_dir() { 0 } else { m.len() };
            out.insert(
                e.path().strip_prefix(dir).unwrap().to_path_buf(),
                format!(
                    "{:?} {size} {:o} {}.{}",
                    m.file_type(),
                    m.mode(),
                    m.mtime(),
                    m.mtime_nsec()
                ),
            );
        }
    }
    out
}

/// What changed between two snapshots, for the failure message.
fn changes(before: &BTreeMap<PathBuf, String>, after: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let mut v = vec![];
    for (p, a) in after {
        match before.get(p) {
            None => v.push(format!("+ {}", p.display())),
            Some(b) if b != a => v.push(format!("~ {}", p.display())),
            _ => {}
        }
    }
    for p in before.keys().filter(|p| !after.contains_key(*p)) {
        v.push(format!("- {}", p.display()));
    }
    v
}

/// Run one row in its own directory under `base`; a problem, if any.
fn check(i: usize, r: &Row, base: &Path, fx: &Path) -> Option<String> {
    let d = base.join(format!("row-{i:03}"));
    std::fs::create_dir(&d).unwrap();
    for (p, content) in &r.files {
        let path = d.join(p);
        if p.ends_with('/') {
            std::fs::create_dir_all(&path).unwrap();
        } else {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, subst(content, &d, fx)).unwrap();
        }
    }
    if let Some(prep) = r.prep {
        prep(&d, fx);
    }
    let args: Vec<String> = r.args.iter().map(|a| subst(a, &d, fx)).collect();
    let before = snapshot(&d);
    let out = Command::new(env!("CARGO_BIN_EXE_imgmode"))
        .args(&args)
        .current_dir(&d)
        .env("IMGMODE_STATE_DIR", d.join("state"))
        .env("IMGMODE_CACHE_DIR", d.join("cache"))
        .env("RUST_LOG", "off")
        .env_remove("RECERT_CONFIG")
        .envs(r.env.iter().map(|(k, v)| (k, subst(v, &d, fx))))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let says = subst(&r.says, &d, fx);
    let mut problems = vec![];
    if out.status.code() != Some(r.exit) {
        problems.push(format!("exit {:?}, expected {}", out.status.code(), r.exit));
    }
    if !err.contains(&says) {
        problems.push(format!("the message lacks {says:?}"));
    }
    let framed = match r.exit {
        2 => err.contains("try '--help'"),
        _ => err.lines().any(|l| l.starts_with("error: ")),
    };
    if !framed {
        problems.push("no error: line (or usage hint) on stderr".into());
    }
    if !out.stdout.is_empty() {
        problems.push(format!(
            "stdout is not empty: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    if let Some(c) = err
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        problems.push(format!("stderr holds the control character {c:?}"));
    }
    if err.lines().any(|l| l.chars().count() > 2100) {
        problems.push("stderr has a line longer than 2100 characters".into());
    }
    let changed = changes(&before, &snapshot(&d));
    if !changed.is_empty() {
        problems.push(format!("it wrote: {}", changed.join(", ")));
    }
    (!problems.is_empty()).then(|| {
        format!(
            "row {i} imgmode {args:?}:\n  {}\n  stderr: {}",
            problems.join("\n  "),
            err.trim_end()
        )
    })
}

#[test]
fn every_bad_input_is_refused_and_nothing_is_written() {
    let rows = all_rows();
    assert!(rows.len() >= 150, "{} rows", rows.len());
    let td = tempfile::tempdir().unwrap();
    let fx = td.path().join("fixtures");
    let base = td.path().join("rows");
    std::fs::create_dir_all(&base).unwrap();
    // A row needs what it declares, and skopeo when it reads the shared fixtures (one of them
    // is made with `imgmode mirror`). What this machine lacks goes through the testkit's one
    // mechanism: a failure naming it in strict mode, a recorded skip otherwise.
    let needs_of = |r: &Row| {
        let mut n = r.needs.clone();
        if uses_fixtures(r) {
            n.push(Need::Tool("skopeo"));
        }
        n
    };
    let mut lacking: Vec<Need> = vec![];
    for n in rows.iter().flat_map(needs_of) {
        if n.missing().is_some() && !lacking.contains(&n) {
            lacking.push(n);
        }
    }
    let runnable = |r: &Row| needs_of(r).iter().all(|n| !lacking.contains(n));
    if !lacking.is_empty() {
        assert!(!imgmode_testkit::can_run(module_path!(), &lacking));
    }
    if lacking.contains(&Need::Tool("skopeo")) {
        std::fs::create_dir_all(&fx).unwrap();
    } else {
        fixtures(&fx);
    }
    let fx_before = snapshot(&fx);
    let mut problems = vec![];
    let mut ran = 0;
    let mut skipped = 0;
    for (i, r) in rows.iter().enumerate() {
        if !runnable(r) {
            skipped += 1;
            continue;
        }
        ran += 1;
        if let Some(p) = check(i, r, &base, &fx) {
            problems.push(p);
        }
    }
    let fx_changes = changes(&fx_before, &snapshot(&fx));
    assert!(
        fx_changes.is_empty(),
        "the fixtures changed: {fx_changes:?}"
    );
    assert!(
        problems.is_empty(),
        "{} of {ran} rows failed:\n{}",
        problems.len(),
        problems.join("\n")
    );
    if skipped > 0 {
        eprintln!("SKIPPED {skipped} bad-input rows: this machine lacks {lacking:?}");
    }
    eprintln!("{ran} bad-input rows passed");
}

/// The shared fixtures under `fx`.
fn fixtures(fx: &Path) {
    std::fs::create_dir_all(fx).unwrap();
    let tmp = fx.join(".build");
    // one image per tag, merged into layouts with tags and without
    let (one, two) = (tmp.join("one"), tmp.join("two"));
    write_oci(&one, r#""v":"one""#, "amd64");
    write_oci(&two, r#""v":"two""#, "amd64");
    merge_layouts(&fx.join("two"), &[("one", &one), ("two", &two)]);
    merge_layouts(&fx.join("untagged"), &[("", &one), ("", &two)]);
    write_oci(&fx.join("plain"), r#""org.example":"x""#, "amd64");
    write_oci(&fx.join("arm"), r#""containers.bootc":"1""#, "arm64");
    write_oci(&fx.join("bootable"), r#""containers.bootc":"1""#, "amd64");
    write_oci(
        &fx.join("seed-badlabel"),
        r#""com.openshift.lifecycle-agent.seed_format_version":"4","com.openshift.lifecycle-agent.seed_cluster_info":"{not json""#,
        "amd64",
    );
    write_oci(
        &fx.join("seed-416"),
        r#""com.openshift.lifecycle-agent.seed_format_version":"4","com.openshift.lifecycle-agent.seed_cluster_info":"{\"seed_cluster_ocp_version\":\"4.16.2\",\"base_domain\":\"example.com\",\"cluster_name\":\"seed\",\"has_proxy\":false,\"has_fips\":false}""#,
        "amd64",
    );
    write_oci(
        &fx.join("seed-v9"),
        r#""com.openshift.lifecycle-agent.seed_format_version":"9","com.openshift.lifecycle-agent.seed_cluster_info":"{\"seed_cluster_ocp_version\":\"4.17.0\",\"base_domain\":\"example.com\",\"cluster_name\":\"seed\"}""#,
        "amd64",
    );
    // an image whose config has no rootfs; one whose layer escapes
    config_only_layout(
        &fx.join("norootfs"),
        r#"{"architecture":"amd64","os":"linux"}"#,
    );
    config_only_layout(
        &fx.join("nohistory"),
        r#"{"architecture":"amd64","os":"linux","config":{"Labels":{"containers.bootc":"1"}},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    write_oci_layers(
        &fx.join("hostile"),
        r#""org.example":"x""#,
        "amd64",
        &[tar_of(&[("../escape", "x")])],
    );
    write_oci(
        &fx.join("seed-04"),
        r#""com.openshift.lifecycle-agent.seed_format_version":"04","com.openshift.lifecycle-agent.seed_cluster_info":"{\"seed_cluster_ocp_version\":\"4.17.0\",\"base_domain\":\"example.com\",\"cluster_name\":\"seed\"}""#,
        "amd64",
    );
    // layouts that are not what the OCI image spec says
    let copy = |name: &str| {
        let d = fx.join(name);
        cp_a(&fx.join("plain"), &d);
        d
    };
    std::fs::remove_file(copy("nolayout").join("oci-layout")).unwrap();
    std::fs::write(
        copy("layout9").join("oci-layout"),
        r#"{"imageLayoutVersion":"9.9"}"#,
    )
    .unwrap();
    rewrite_layout(
        &copy("diffid-wrong"),
        |_| {},
        |c| c["rootfs"]["diff_ids"] = serde_json::json!([format!("sha256:{}", "0".repeat(64))]),
    );
    rewrite_layout(
        &copy("diffid-missing"),
        |_| {},
        |c| c["rootfs"]["diff_ids"] = serde_json::json!([]),
    );
    rewrite_layout(&copy("schema1"), |m| m["schemaVersion"] = 1.into(), |_| {});
    std::fs::create_dir_all(fx.join("not-a-layout")).unwrap();
    std::fs::write(fx.join("a-file"), "not a directory").unwrap();
    // a payload: the plain image mirrored
    let out = Command::new(env!("CARGO_BIN_EXE_imgmode"))
        .args(["mirror", "-q", "--dir"])
        .arg(fx.join("payload"))
        .arg("--image")
        .arg(format!("oci:{}=test/plain:1", fx.join("plain").display()))
        .env("IMGMODE_STATE_DIR", tmp.join("state"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mirror: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// An OCI layout of the images in `srcs` (each a one-image layout), tagged as given (an empty
/// tag leaves the entry untagged).
fn merge_layouts(dest: &Path, srcs: &[(&str, &Path)]) {
    let blobs = dest.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut entries = vec![];
    for (tag, src) in srcs {
        for b in std::fs::read_dir(src.join("blobs/sha256")).unwrap() {
            let b = b.unwrap();
            std::fs::copy(b.path(), blobs.join(b.file_name())).unwrap();
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(src.join("index.json")).unwrap()).unwrap();
        let mut e = index["manifests"][0].clone();
        if !tag.is_empty() {
            e["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        }
        entries.push(e);
    }
    std::fs::write(dest.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dest.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries})).unwrap(),
    )
    .unwrap();
}

/// A one-image layout of no layers and the given config.
fn config_only_layout(dir: &Path, config: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| put_blob(&blobs, data);
    let (c, cn) = put(config.as_bytes());
    let (m, mn) = put(format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":{cn}}},"layers":[]}}"#).as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m}","size":{mn}}}]}}"#),
    )
    .unwrap();
}

/// `cp -a from to`.
pub fn cp_a(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Copy the payload fixture to `@D/p` (preps edit the copy).
pub fn copy_payload(d: &Path, fx: &Path) {
    cp_a(&fx.join("payload"), &d.join("p"));
}

/// Edit the record of the payload copy at `@D/p` with `f`.
pub fn edit_record(d: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = d.join("p/imgmode-payload.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// The first blob's `data` file of the payload copy at `@D/p`.
pub fn first_blob(d: &Path) -> PathBuf {
    let blobs = d.join("p/docker/registry/v2/blobs/sha256");
    let prefix = std::fs::read_dir(&blobs).unwrap().next().unwrap().unwrap();
    let blob = std::fs::read_dir(prefix.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    blob.path().join("data")
}

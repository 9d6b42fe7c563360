//! `imgmode container lint`: the checks `bootc container lint` makes, by name, over an image's
//! merged tree and labels. Fatal lints fail `imgmode build`; warnings are reported.

use crate::tree::{Kind, Tree};
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Fatal,
    Warning,
}

/// One lint's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintResult {
    pub name: &'static str,
    pub severity: Severity,
    pub passed: bool,
    /// What is wrong and what to do (empty when passed).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The offending paths (at most [`MAX_PATHS`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// Every lint, for `--list` and the docs: name, severity, what it checks.
pub const LINTS: &[(&str, Severity, &str)] = &[
    (
        "bootc-label",
        Severity::Fatal,
        "the image carries containers.bootc=1 (or ostree.bootable)",
    ),
    (
        "kernel",
        Severity::Fatal,
        "exactly one kernel: /usr/lib/modules/$kver/vmlinuz with its initramfs.img",
    ),
    (
        "baseimage-root",
        Severity::Fatal,
        "/sysroot exists and /ostree links to sysroot/ostree",
    ),
    ("var-run", Severity::Fatal, "/var/run is a symlink to /run"),
    (
        "etc-usretc",
        Severity::Fatal,
        "no /usr/etc next to /etc (ostree moves /etc there itself)",
    ),
    ("utf8", Severity::Fatal, "every file name is UTF-8"),
    (
        "nonempty-boot",
        Severity::Warning,
        "nothing in /boot (the kernel belongs in /usr/lib/modules)",
    ),
    (
        "nonempty-run-tmp",
        Severity::Warning,
        "nothing left in /run or /tmp",
    ),
    (
        "var-content",
        Severity::Warning,
        "content under /var is only seeded at the first deployment",
    ),
];

/// How many offending paths a result lists.
pub const MAX_PATHS: usize = 10;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct LintReport {
    pub image: String,
    pub results: Vec<LintResult>,
}

impl LintReport {
    pub fn fatal(&self) -> impl Iterator<Item = &LintResult> {
        self.results
            .iter()
            .filter(|r| !r.passed && r.severity == Severity::Fatal)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &LintResult> {
        self.results
            .iter()
            .filter(|r| !r.passed && r.severity == Severity::Warning)
    }

    pub fn to_human(&self) -> String {
        let mut s = String::new();
        for r in &self.results {
            let tag = match (r.passed, r.severity) {
                (true, _) => "ok",
                (false, Severity::Fatal) => "FAIL",
                (false, Severity::Warning) => "warning",
            };
            s.push_str(&format!("{tag:<8} {}", r.name));
            if !r.passed {
                s.push_str(&format!(": {}", r.message));
                for p in &r.paths {
                    s.push_str(&format!("\n           {p}"));
                }
            }
            s.push('\n');
        }
        let (f, w) = (self.fatal().count(), self.warnings().count());
        s.push_str(&format!(
            "{}: {} checks, {f} failed, {w} warnings\n",
            self.image,
            self.results.len()
        ));
        s
    }

    /// The error for a report with fatal lints, listing each by name.
    pub fn error(&self) -> Option<anyhow::Error> {
        let fatal: Vec<String> = self
            .fatal()
            .map(|r| format!("{}: {}", r.name, r.message))
            .collect();
        (!fatal.is_empty()).then(|| {
            anyhow::anyhow!(
                "{} failed {} lint(s):\n  {}",
                self.image,
                fatal.len(),
                fatal.join("\n  ")
            )
        })
    }
}

fn display(p: &std::path::Path) -> String {
    format!("/{}", String::from_utf8_lossy(p.as_os_str().as_bytes()))
}

fn result(name: &'static str, paths: Vec<String>, message: impl Into<String>) -> LintResult {
    let severity = LINTS
        .iter()
        .find(|l| l.0 == name)
        .map(|l| l.1)
        .expect("every lint is listed in LINTS");
    let passed = paths.is_empty();
    LintResult {
        name,
        severity,
        passed,
        message: if passed {
            String::new()
        } else {
            message.into()
        },
        paths: paths.into_iter().take(MAX_PATHS).collect(),
    }
}

/// Run every lint over `tree` with the image's `labels`.
pub fn lint(image: &str, tree: &Tree, labels: &BTreeMap<String, String>) -> LintReport {
    let results = vec![
        bootc_label(labels),
        kernel(tree),
        baseimage_root(tree),
        var_run(tree),
        etc_usretc(tree),
        utf8(tree),
        nonempty_boot(tree),
        nonempty_run_tmp(tree),
        var_content(tree),
    ];
    LintReport {
        image: image.to_string(),
        results,
    }
}

fn bootc_label(labels: &BTreeMap<String, String>) -> LintResult {
    let bootable = imgmode_os::disk::is_bootable(|k| labels.get(k).map(String::as_str));
    result(
        "bootc-label",
        if bootable { vec![] } else { vec!["(image labels)".into()] },
        "the image has no containers.bootc=1 label: it is not a bootable container image; build FROM a bootable base (imgmode-base, or another bootc image)",
    )
}

fn kernel(tree: &Tree) -> LintResult {
    let kernels: Vec<&PathBuf> = tree
        .children("usr/lib/modules")
        .filter(|(p, e)| {
            p.components().count() == 5
                && p.file_name().is_some_and(|n| n == "vmlinuz")
                && e.kind == Kind::File
        })
        .map(|(p, _)| p)
        .collect();
    let mut kernel_paths: Vec<String> = Vec::new();
    let kernel_msg = match kernels.len() {
        0 => {
            kernel_paths.push("/usr/lib/modules".into());
            "no kernel: a bootable image needs /usr/lib/modules/$kver/vmlinuz".to_string()
        }
        1 => {
            let initramfs = kernels[0].with_file_name("initramfs.img");
            if tree.entries.contains_key(&initramfs) {
                String::new()
            } else {
                kernel_paths.push(display(&initramfs));
                format!(
                    "the kernel has no initramfs: regenerate it (dracut --kver ... {})",
                    display(&initramfs)
                )
            }
        }
        n => {
            kernel_paths.extend(kernels.iter().map(|p| display(p)));
            format!("{n} kernels under /usr/lib/modules; a bootable image needs exactly one (remove the old kernel package)")
        }
    };
    result("kernel", kernel_paths, kernel_msg)
}

fn baseimage_root(tree: &Tree) -> LintResult {
    let mut root_bad = Vec::new();
    if tree.get("sysroot").map(|e| &e.kind) != Some(&Kind::Dir) {
        root_bad.push("/sysroot".to_string());
    }
    match tree.get("ostree").map(|e| &e.kind) {
        Some(Kind::Symlink(t)) if t.as_os_str() == "sysroot/ostree" => {}
        _ => root_bad.push("/ostree".to_string()),
    }
    result(
        "baseimage-root",
        root_bad,
        "the ostree root layout is missing (/sysroot directory, /ostree -> sysroot/ostree); derive from a bootable base image",
    )
}

fn var_run(tree: &Tree) -> LintResult {
    let var_run_ok = matches!(
        tree.get("var/run").map(|e| &e.kind),
        Some(Kind::Symlink(t)) if t.as_os_str() == "../run" || t.as_os_str() == "/run"
    );
    result(
        "var-run",
        if var_run_ok {
            vec![]
        } else {
            vec!["/var/run".into()]
        },
        "/var/run must be a symlink to /run (ln -sfn ../run /var/run)",
    )
}

fn etc_usretc(tree: &Tree) -> LintResult {
    let exists = |p: &str| tree.get(p).is_some() || tree.children(p).next().is_some();
    let usretc = exists("usr/etc") && exists("etc");
    result(
        "etc-usretc",
        if usretc { vec!["/usr/etc".into()] } else { vec![] },
        "both /etc and /usr/etc exist; /usr/etc is where ostree keeps /etc's defaults: put configuration in /etc",
    )
}

fn utf8(tree: &Tree) -> LintResult {
    let bad_names: Vec<String> = tree
        .entries
        .keys()
        .filter(|p| std::str::from_utf8(p.as_os_str().as_bytes()).is_err())
        .map(|p| display(p))
        .collect();
    result(
        "utf8",
        bad_names,
        "file names that are not UTF-8; rename them",
    )
}

fn nonempty_boot(tree: &Tree) -> LintResult {
    let boot: Vec<String> = tree.children("boot").map(|(p, _)| display(p)).collect();
    result(
        "nonempty-boot",
        boot,
        "files in /boot are hidden by the boot partition at runtime; kernels belong in /usr/lib/modules/$kver",
    )
}

fn nonempty_run_tmp(tree: &Tree) -> LintResult {
    let run_tmp: Vec<String> = tree
        .children("run")
        .chain(tree.children("tmp"))
        .map(|(p, _)| display(p))
        .collect();
    result(
        "nonempty-run-tmp",
        run_tmp,
        "files in /run or /tmp are not part of the booted system (tmpfs); remove them in the same RUN",
    )
}

fn var_content(tree: &Tree) -> LintResult {
    let var: Vec<String> = tree
        .children("var")
        .filter(|(p, e)| {
            e.kind != Kind::Dir
                // links into /usr follow the image (e.g. /var/lib/dpkg)
                && !matches!(&e.kind, Kind::Symlink(t) if t.to_string_lossy().contains("usr/"))
                && !matches!(p.to_str(), Some("var/run" | "var/lock"))
                && !p.starts_with("var/tmp")
                && !p.starts_with("var/cache")
                && !p.starts_with("var/log")
        })
        .map(|(p, _)| display(p))
        .collect();
    let n = var.len();
    result(
        "var-content",
        var,
        format!("{n} files under /var are copied only at the first deployment and never updated; create them with systemd-tmpfiles (tmpfiles.d) or ship them under /usr"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::tests::layer;
    use std::os::unix::ffi::OsStringExt;

    fn good_tree() -> Tree {
        let mut t = Tree::default();
        t.apply_layer(
            &layer(&[
                ("etc", Kind::Dir),
                ("sysroot", Kind::Dir),
                ("ostree", Kind::Symlink("sysroot/ostree".into())),
                ("var", Kind::Dir),
                ("var/run", Kind::Symlink("../run".into())),
                ("var/tmp", Kind::Dir),
                ("boot", Kind::Dir),
                ("run", Kind::Dir),
                ("tmp", Kind::Dir),
                ("usr/lib/modules/6.12.0", Kind::Dir),
                ("usr/lib/modules/6.12.0/vmlinuz", Kind::File),
                ("usr/lib/modules/6.12.0/initramfs.img", Kind::File),
                ("usr/lib/modules/6.12.0/kernel/x.ko", Kind::File),
            ])[..],
        )
        .unwrap();
        t
    }

    fn labels() -> BTreeMap<String, String> {
        [("containers.bootc".to_string(), "1".to_string())].into()
    }

    fn failed(r: &LintReport) -> Vec<&str> {
        r.results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn a_good_image_passes_every_lint() {
        let r = lint("good", &good_tree(), &labels());
        assert!(failed(&r).is_empty(), "{}", r.to_human());
        assert!(r.error().is_none());
        assert_eq!(r.results.len(), LINTS.len());
    }

    #[test]
    fn each_lint_catches_its_problem() {
        let cases: Vec<(Vec<(&str, Kind)>, &str)> = vec![
            (
                vec![
                    ("usr/lib/modules/6.1.0/vmlinuz", Kind::File),
                    ("usr/lib/modules/6.1.0/initramfs.img", Kind::File),
                ],
                "kernel",
            ),
            (
                vec![("usr/lib/modules/6.12.0/.wh.initramfs.img", Kind::File)],
                "kernel",
            ),
            (vec![("var/run", Kind::Dir)], "var-run"),
            (vec![("usr/etc/passwd", Kind::File)], "etc-usretc"),
            (vec![("boot/vmlinuz-6.1.0", Kind::File)], "nonempty-boot"),
            (vec![("tmp/build.log", Kind::File)], "nonempty-run-tmp"),
            (vec![("var/lib/app/db", Kind::File)], "var-content"),
            (vec![(".wh.sysroot", Kind::File)], "baseimage-root"),
        ];
        for (extra, want) in cases {
            let mut t = good_tree();
            t.apply_layer(&layer(&extra)[..]).unwrap();
            let r = lint("img", &t, &labels());
            assert_eq!(failed(&r), vec![want], "{want}: {}", r.to_human());
            let res = r.results.iter().find(|x| x.name == want).unwrap();
            assert!(!res.message.is_empty() && !res.paths.is_empty());
        }
    }

    #[test]
    fn label_and_names() {
        let mut t = good_tree();
        t.entries.insert(
            PathBuf::from(std::ffi::OsString::from_vec(b"usr/share/bad\xff".to_vec())),
            crate::tree::Entry { kind: Kind::File },
        );
        let r = lint("img", &t, &BTreeMap::new());
        assert_eq!(failed(&r), vec!["bootc-label", "utf8"]);
        let err = r.error().unwrap().to_string();
        assert!(
            err.contains("failed 2 lint(s)") && err.contains("bootc-label: "),
            "{err}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["results"][0]["severity"], "fatal");
    }
}

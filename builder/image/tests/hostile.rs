//! The hostile-archive regression corpus (`tests/hostile/make_corpus.py`) against the one
//! extractor: every archive is refused with its reason or unpacked harmlessly, and nothing
//! outside the target changes.

use imgmode_image::extract::{unpack_into, Budget, Policy};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Every file beside the target: path -> (mode, content or link target).
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if m.is_dir() {
                stack.push(p.clone());
                vec![]
            } else {
                std::fs::read(&p).unwrap()
            };
            out.insert(p, (m.mode(), content));
        }
    }
    out
}

enum Expect {
    /// Refused, the message naming this.
    Refused(&'static str),
    /// Unpacked; this holds inside the target.
    Harmless(fn(&Path)),
}

fn corpus() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "do not touch\n").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    let corpus = t.path().join("corpus");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/make_corpus.py");
    let st = std::process::Command::new("python3")
        .arg(&script)
        .arg(&corpus)
        .arg(&outside)
        .status()
        .expect("python3 runs the corpus script (Debian package python3)");
    assert!(st.success());
    (t, outside, corpus)
}

fn open(p: &Path) -> Box<dyn std::io::Read> {
    let f = std::fs::File::open(p).unwrap();
    if p.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    }
}

#[test]
fn every_hostile_archive_is_refused_or_harmless_and_nothing_outside_changes() {
    use Expect::*;
    let cases: Vec<(&str, Expect)> = vec![
        ("CVE-2001-1267-dotdot-path.tar", Refused("\"..\" component")),
        (
            "CVE-2007-4131-inner-dotdot.tar",
            Refused("\"..\" component"),
        ),
        (
            "CVE-2021-32804-absolute-path.tar",
            Harmless(|t| {
                // the leading slashes are dropped: the file lands inside the target
                let found = walk(t).into_iter().any(|p| p.ends_with("outside/absolute"));
                assert!(found, "{:?}", walk(t));
            }),
        ),
        (
            "CVE-2021-32803-symlink-then-file.tar",
            Refused("leads outside the target"),
        ),
        (
            "symlink-absolute-then-file.tar",
            Refused("leads outside the target"),
        ),
        (
            "symlink-then-directory-chmod.tar",
            Harmless(|t| {
                let m = std::fs::symlink_metadata(t.join("link")).unwrap();
                assert!(m.is_dir(), "the symlink is replaced by the directory");
            }),
        ),
        (
            "symlink-then-directory.tar",
            Refused("leads outside the target"),
        ),
        (
            "CVE-2024-12905-symlink-hardlink-target.tar",
            Refused("leads outside the target"),
        ),
        ("hardlink-escape.tar", Refused("\"..\" component")),
        ("hardlink-absolute.tar", Refused("has not written")),
        (
            "hardlink-to-directory.tar",
            Refused("hard link \"alias\" -> \"etc\" names a directory"),
        ),
        (
            "CVE-2018-20834-link-then-file.tar",
            Harmless(|t| {
                let m = std::fs::symlink_metadata(t.join("name")).unwrap();
                assert!(m.is_file() && m.nlink() == 1);
                assert_eq!(
                    std::fs::read(t.join("name")).unwrap(),
                    b"written by a hostile archive\n"
                );
            }),
        ),
        (
            "CVE-2021-29136-symlink-named-dot.tar",
            Refused("names the target directory itself"),
        ),
        (
            "symlink-named-slash.tar",
            Refused("names the target directory itself"),
        ),
        ("pax-path-override.tar", Refused("\"..\" component")),
        ("pax-linkpath-override.tar", Refused("\"..\" component")),
        ("gnu-longname-dotdot.tar", Refused("\"..\" component")),
        (
            "device-node-outside-dev.tar",
            Refused("device node \"etc/disk\" outside dev/"),
        ),
        ("fifo-in-usr.tar", Refused("FIFO \"usr/bin/fifo\" outside")),
        (
            "setuid-root-binary.tar",
            Harmless(|t| {
                // the seed image's layer format carries no setuid programs: the bit is dropped
                let m = std::fs::metadata(t.join("usr/bin/pwn")).unwrap();
                assert_eq!(m.mode() & 0o7777, 0o755);
            }),
        ),
        ("non-utf8-name.tar", Refused("is not UTF-8")),
        ("absurd-size-header.tar", Refused("unpack budget")),
        ("decompression-bomb.tar.gz", Refused("unpack budget")),
        ("whiteout-dotdot.tar", Refused("whiteout")),
        ("whiteout-dot.tar", Refused("whiteout")),
    ];
    let (t, outside, corpus) = corpus();
    let on_disk: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(on_disk.len() >= 12);
    for name in &on_disk {
        assert!(
            cases.iter().any(|(n, _)| n == name),
            "{name} has no expectation here"
        );
    }
    for (name, expect) in &cases {
        // image-layer rules (whiteouts on) and the seed tarballs' rules; the setuid case under
        // the seed layer's rules (no setid bits)
        let policies = if name.starts_with("setuid") {
            vec![("plain", Policy::plain())]
        } else {
            vec![
                ("image layer", Policy::image_layer()),
                ("system archive", Policy::system_archive()),
            ]
        };
        for (pname, policy) in policies {
            let target = t.path().join("target");
            let before = snapshot(t.path(), &target);
            let mut budget = Budget::new(64 << 20);
            let res = unpack_into(open(&corpus.join(name)), &target, &policy, &mut budget);
            // without whiteout rules a ".wh." name is an ordinary (empty) file
            let plain_wh = name.starts_with("whiteout") && !policy.whiteouts;
            match (expect, res) {
                (_, Ok(_)) if plain_wh => {}
                (Refused(why), Err(e)) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains(why), "{name} ({pname}): {msg}");
                }
                (Refused(why), Ok(u)) => {
                    panic!("{name} ({pname}) was unpacked ({u:?}), expected refusal: {why}")
                }
                (Harmless(check), Ok(_)) => check(&target),
                (Harmless(_), Err(e)) => panic!("{name} ({pname}): {e:#}"),
            }
            assert_eq!(
                before,
                snapshot(t.path(), &target),
                "{name} ({pname}) changed something outside"
            );
            assert_eq!(
                std::fs::read(outside.join("secret")).unwrap(),
                b"do not touch\n"
            );
            std::fs::remove_dir_all(&target).unwrap();
        }
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// setuid bits survive where the format carries them (an image layer unpacked as root).
#[test]
fn image_layers_keep_setuid_as_root() {
    // owners and setuid bits are applied only as root
    imgmode_testkit::require!(imgmode_testkit::Need::Root);
    let (t, _outside, corpus) = corpus();
    let target = t.path().join("target");
    unpack_into(
        open(&corpus.join("setuid-root-binary.tar")),
        &target,
        &Policy::image_layer(),
        &mut Budget::new(1 << 20),
    )
    .unwrap();
    let m = std::fs::metadata(target.join("usr/bin/pwn")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o4755, 0));
}

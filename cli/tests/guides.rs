//! The guides' `sh test` blocks (`docs/guide/`, see `testkit/src/guide.rs`), run on this host
//! with the `imgmode` under test first in `PATH`: each guide's blocks in order, in one scratch
//! directory, with the state and cache directories inside it. A block must exit 0, and the
//! `text` block after it must be in what it printed.

mod common;
use common::*;
use imgmode_testkit::guide;
use std::path::Path;

/// The guides that have blocks to run here, and what their blocks need of the machine.
const RUN: &[(&str, &[Need])] = &[
    (
        "image-based-install.md",
        &[Need::Tool("ssh-keygen"), Need::Tool("xorriso")],
    ),
    ("layered-images.md", &[]),
    ("recert.md", &[Need::Tool("openssl")]),
];

fn run_guide(name: &str) {
    let needs = RUN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, needs)| *needs)
        .expect("a guide of RUN");
    require!(all needs);
    let blocks: Vec<guide::Block> = guide::all(&guide::dir())
        .unwrap()
        .into_iter()
        .filter(|b| b.guide == name && b.run_tag() == Some("test"))
        .collect();
    assert!(!blocks.is_empty(), "{name} has no `sh test` block");
    let td = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_imgmode")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (i, b) in blocks.iter().enumerate() {
        let script = td.path().join(format!(".block-{i}.sh"));
        std::fs::write(&script, &b.text).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", "exec 2>&1; set -eu; . \"$0\""])
            .arg(&script)
            .current_dir(td.path())
            .env("PATH", &path)
            .env("IMGMODE_STATE_DIR", td.path().join(".state"))
            .env("IMGMODE_CACHE_DIR", td.path().join(".cache"))
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: the block failed ({}):\n{}\n--- it printed ---\n{printed}",
            b.place(),
            out.status,
            b.text
        );
        if let Some(expect) = &b.expect {
            if let Some(line) = guide::missing_line(expect, &printed) {
                panic!(
                    "{}: the block did not print {line:?}\n--- it printed ---\n{printed}",
                    b.place()
                );
            }
        }
    }
}

#[test]
fn every_guide_with_blocks_to_run_is_run_here() {
    let mut with_tests: Vec<String> = guide::all(&guide::dir())
        .unwrap()
        .into_iter()
        .filter(|b| b.run_tag() == Some("test"))
        .map(|b| b.guide)
        .collect();
    with_tests.dedup();
    let listed: Vec<&str> = RUN.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        with_tests, listed,
        "RUN must list every guide with `sh test` blocks"
    );
}

#[test]
fn image_based_install_guide() {
    run_guide("image-based-install.md");
}

#[test]
fn layered_images_guide() {
    run_guide("layered-images.md");
}

#[test]
fn recert_guide() {
    run_guide("recert.md");
}

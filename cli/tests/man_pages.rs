//! `imgmode internal man-pages DIR`: manual pages generated from the clap definitions.

mod common;
use common::*;

#[test]
fn man_pages_are_written_for_every_verb() {
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("man");
    let (ok, out, err) = run(td.path(), &["internal", "man-pages", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("wrote the manual pages"), "{out}");
    let page = |name: &str| {
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    // roff escapes the hyphens of option names
    for (name, needles) in [
        ("imgmode.1", &["imgmode", "disk", "\\-\\-quiet"][..]),
        (
            "imgmode-disk.1",
            &["\\-\\-output", "\\-\\-root\\-fs", "qcow2"][..],
        ),
        ("imgmode-status.1", &["\\-\\-sysroot", "\\-\\-format"][..]),
        (
            "imgmode-seed-create.1",
            &["\\-\\-work\\-dir", "\\-\\-compression"][..],
        ),
        ("imgmode-ibi-install.1", &["\\-\\-seed\\-from"][..]),
        (
            "imgmode-recert.1",
            &["\\-\\-cluster\\-rename", "RECERT_CONFIG"][..],
        ),
    ] {
        let text = page(name);
        assert!(text.starts_with(".ie \\n(.g"), "{name} is not roff");
        for n in needles {
            assert!(text.contains(n), "{name} does not mention {n}");
        }
    }
    // hidden verbs have no page
    assert!(!dir.join("imgmode-internal.1").exists());
    let pages = std::fs::read_dir(&dir).unwrap().count();
    assert!(pages > 30, "{pages} pages");
}

/// `imgmode install-extras --prefix TD/usr-local`: the prefix and what it printed.
fn install_extras(td: &std::path::Path) -> (std::path::PathBuf, String) {
    let prefix = td.join("usr-local");
    let (ok, out, err) = run(
        td,
        &["install-extras", "--prefix", prefix.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    (prefix, out)
}

/// `cargo install` installs the binary only: `install-extras` adds the manual pages and the
/// completions under a prefix, where man and the shells look for them.
#[test]
fn install_extras_puts_pages_and_completions_where_they_are_looked_for() {
    let td = tempfile::tempdir().unwrap();
    let (prefix, out) = install_extras(td.path());
    assert!(
        out.contains("manual pages and the bash, zsh and fish completions"),
        "{out}"
    );
    for (rel, needle) in [
        ("share/man/man1/imgmode-ibi-install.1", "\\-\\-seed\\-from"),
        ("share/man/man1/imgmode-install-extras.1", "\\-\\-prefix"),
        ("share/bash-completion/completions/imgmode", "_imgmode()"),
        ("share/zsh/vendor-completions/_imgmode", "#compdef imgmode"),
        (
            "share/fish/vendor_completions.d/imgmode.fish",
            "complete -c imgmode",
        ),
    ] {
        let text =
            std::fs::read_to_string(prefix.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(text.contains(needle), "{rel} does not hold {needle}");
    }
}

/// man itself reads an installed page (man-db, from `cargo xtask deps`).
#[test]
fn man_reads_an_installed_page() {
    imgmode_testkit::require!(imgmode_testkit::Need::Tool("man"));
    let td = tempfile::tempdir().unwrap();
    let (prefix, _) = install_extras(td.path());
    let m = std::process::Command::new("man")
        .args([
            "-M",
            prefix.join("share/man").to_str().unwrap(),
            "imgmode-ibi-install",
        ])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&m.stdout);
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    assert!(text.contains("--seed-from"), "{text}");
}

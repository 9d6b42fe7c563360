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

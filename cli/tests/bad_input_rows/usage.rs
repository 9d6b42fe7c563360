//! Usage errors: exit 2 everywhere, with clap's message and the `--help` hint.

use super::{row, Row};

fn usage(args: &[&str], says: &str) -> Row {
    row(2, says, args)
}

pub fn usage_rows() -> Vec<Row> {
    vec![
        usage(
            &[
                "payload",
                "remove",
                "sha256:x",
                "--store",
                "@D",
                "--storage",
                "@D/nostorage",
            ],
            "@D/nostorage: No such file or directory",
        ),
        usage(
            &["payload", "status", "--storage", "@D/nostorage"],
            "@D/nostorage: No such file or directory",
        ),
        usage(
            &["payload", "status", "--sysroot", "@D/nosysroot"],
            "@D/nosysroot: No such file or directory",
        ),
        usage(
            &["payload", "remove", "sha256:x", "--sysroot", "@D/nosysroot"],
            "@D/nosysroot: No such file or directory",
        ),
        usage(&["container", "lint", "--list", "x"], "cannot be used with"),
        usage(
            &["disk", "x", "-o", "y", "--format", "vdi"],
            "invalid value 'vdi'",
        ),
        usage(
            &["disk", "x", "-o", "y", "--size", "lots"],
            "invalid value 'lots'",
        ),
        usage(&["disk", "x"], "required arguments were not provided"),
        usage(&["status", "--format", "xml"], "invalid value 'xml'"),
        usage(&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        usage(
            &["status", "--frobnicate"],
            "unexpected argument '--frobnicate'",
        ),
        usage(
            &["image", "unpack", "x", "d", "--max-size", "banana"],
            "invalid value 'banana'",
        ),
        usage(
            &["image", "unpack", "x"],
            "required arguments were not provided",
        ),
        usage(
            &["seed", "check", "s", "--config", "c", "--arch", "x86_64"],
            "is not an OCI architecture name",
        ),
        usage(
            &["seed", "check", "s", "--config", "c", "--arch", "banana"],
            "is not an OCI architecture name",
        ),
        usage(
            &[
                "mirror",
                "--image",
                "quay.io/a/b:1",
                "--dir",
                "@D/m",
                "--authfile",
                "@D/nope.json",
            ],
            "@D/nope.json: No such file or directory",
        ),
        usage(
            &[
                "mirror",
                "--image",
                "quay.io/a/b:1",
                "--dir",
                "@D/m",
                "--cert-dir",
                "@D/nope",
            ],
            "@D/nope: No such file or directory",
        ),
        usage(
            &["image", "unpack", "x", "@D/out", "--authfile", "@D"],
            "is not a file",
        ),
        usage(
            &["image", "unpack", "x", "@D/out", "--cert-dir", "@D/f"],
            "is not a directory",
        )
        .file("f", "x"),
        usage(
            &[
                "layer",
                "build",
                "c.yaml",
                "--base",
                "b",
                "--authfile",
                "@D/nope",
            ],
            "@D/nope: No such file or directory",
        ),
        usage(
            &["push", "a", "b", "--format", "json"],
            "imgmode push has one form of output",
        ),
        usage(
            &["--format", "json", "disk", "x", "-o", "y"],
            "imgmode disk",
        ),
        usage(&["completions", "fish2"], "invalid value 'fish2'"),
        usage(
            &["recert", "--frobnicate"],
            "unexpected argument '--frobnicate'",
        ),
        usage(
            &[
                "layer",
                "build",
                "c.yaml",
                "--base",
                "b",
                "--tls-verify",
                "maybe",
            ],
            "invalid value 'maybe'",
        ),
        usage(&["status", "--format", "\u{1b}[2J"], "invalid value"),
        usage(
            &["ibi", "create-config-image"],
            "required arguments were not provided",
        ),
    ]
}

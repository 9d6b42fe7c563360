//! `layer build` (a MachineOSConfig's name never becomes a path) and the node verbs.

use super::{row, Row};

const MOSC: &str = "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineOSConfig\nmetadata:\n  name: layered-image\nspec:\n  machineConfigPool:\n    name: worker\n  containerFile:\n  - containerfileArch: NoArch\n    content: |-\n      FROM configs AS final\n      RUN echo hi\n  imageBuilder:\n    imageBuilderType: Job\n  renderedImagePushSpec: registry.example.com:5000/os/image:latest\n";

/// `layer build @D/mosc.yaml` of `MOSC` with `from` replaced by `to`.
fn layer(from: &str, to: &str, says: &str) -> Row {
    assert!(MOSC.contains(from), "{from}");
    row(
        1,
        says,
        &[
            "layer",
            "build",
            "@D/mosc.yaml",
            "--base",
            "imgmode-base",
            "--machineconfigs",
            "@D/mc",
            "--output-dir",
            "@D/out",
        ],
    )
    .file("mosc.yaml", &MOSC.replace(from, to))
    .dir("mc")
    .dir("out")
}

const MC: &str = "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: os-layer\nspec:\n  osImageURL: quay.io/org/os:4.18\n";

pub fn layer_and_node_rows() -> Vec<Row> {
    vec![
        row(
            1,
            "the base image oci:@F/plain is not bootable",
            &[
                "layer",
                "build",
                "@D/mosc.yaml",
                "--base",
                "oci:@F/plain",
                "--machineconfigs",
                "@D/mc",
                "--output-dir",
                "@D/out",
            ],
        )
        .file("mosc.yaml", MOSC)
        .dir("mc")
        .dir("out"),
        layer(
            "kind: MachineOSConfig\n",
            "kind: MachineOSConfig\nfoo: bar\n",
            "unknown field `foo`",
        ),
        layer(
            "renderedImagePushSpec: registry.example.com:5000/os/image:latest\n",
            "renderedImagePushSpec: \"oci:/tmp/x\\n:latest\"\n",
            "spec.renderedImagePushSpec \"oci:/tmp/x\\n:latest\"",
        ),
        layer(
            "renderedImagePushSpec: registry.example.com:5000/os/image:latest\n",
            "renderedImagePushSpec: registry.example.com/os/image:bad!tag\n",
            "is not a registry reference",
        ),
        row(
            1,
            "--build-arg \"A=1\\nRUN x\" holds a control character",
            &["build", "--build-arg", "A=1\nRUN x", "@D/ctx"],
        )
        .file("ctx/Containerfile", "FROM scratch\n"),
        layer(
            "name: layered-image\n",
            "name: ../../x\n",
            "metadata.name \"../../x\"",
        ),
        layer(
            "name: layered-image\n",
            "name: /etc/x\n",
            "metadata.name \"/etc/x\"",
        ),
        layer(
            "name: layered-image\n",
            "name: Bad_Name\n",
            "metadata.name \"Bad_Name\"",
        ),
        layer(
            "name: layered-image\n",
            "name: \"a\\nb\"\n",
            "metadata.name \"a\\nb\"",
        ),
        layer(
            "  name: layered-image\n",
            "",
            "metadata: missing field `name`",
        ),
        layer(
            "kind: MachineOSConfig\n",
            "kind: MachineConfig\n",
            "MachineConfig",
        ),
        layer(
            "  imageBuilder:\n",
            "  bogus: 1\n  imageBuilder:\n",
            "unknown field `bogus`",
        ),
        layer("NoArch", "ARM64", "has no Containerfile for"),
        layer(
            "  renderedImagePushSpec: registry.example.com:5000/os/image:latest\n",
            "",
            "has no spec.renderedImagePushSpec",
        ),
        layer("    name: worker\n", "    name: nosuchpool\n", "nosuchpool"),
        row(
            1,
            "reading",
            &["layer", "build", "@D/nope.yaml", "--base", "imgmode-base"],
        ),
        row(
            1,
            "has no transport",
            &["switch", "imgmode-base", "--sysroot", "@D"],
        ),
        row(
            1,
            "unsupported transport \"ftp\"",
            &["switch", "ftp://h/x", "--sysroot", "@D"],
        ),
        row(
            1,
            "is this an ostree-booted system",
            &["rollback", "--sysroot", "@D"],
        ),
        row(
            1,
            "is this an ostree-booted system",
            &["upgrade", "--sysroot", "@D"],
        ),
        row(
            1,
            "names a tag; image mode needs a digest",
            &["apply-machineconfig", "@D/mc.yaml", "--sysroot", "@D"],
        )
        .file("mc.yaml", MC),
        row(
            1,
            "metadata.name \"../x\"",
            &["apply-machineconfig", "@D/mc.yaml", "--sysroot", "@D"],
        )
        .file("mc.yaml", &MC.replace("name: os-layer", "name: ../x")),
        row(
            1,
            "malformed digest",
            &["apply-machineconfig", "@D/mc.yaml", "--sysroot", "@D"],
        )
        .file(
            "mc.yaml",
            &MC.replace("quay.io/org/os:4.18", "quay.io/org/os@sha256:AB"),
        ),
        row(
            1,
            "no MachineConfig is applied",
            &["revert", "--sysroot", "@D"],
        ),
        row(
            1,
            "is this an ostree-booted system?",
            &["status", "--sysroot", "@D"],
        ),
    ]
}

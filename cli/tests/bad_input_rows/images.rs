//! Image references and image contents: `image unpack`, `container lint`, `disk`, `push`,
//! `seed check`.

use super::{row, Row};
use crate::common::Need;

/// `image unpack REF @D/out` refused with `says`.
fn unpack(image: &str, says: &str) -> Row {
    row(1, says, &["image", "unpack", image, "@D/out"])
}

/// `container lint REF` refused with `says`.
fn lint(image: &str, says: &str) -> Row {
    row(1, says, &["container", "lint", image])
}

/// `disk REF -o @D/disk.qcow2` refused with `says` (disk needs root).
fn disk(image: &str, says: &str) -> Row {
    row(1, says, &["disk", image, "-o", "@D/disk.qcow2"]).needs(Need::Root)
}

/// Image references: transports, names, tags and digests, as containers-transports(5) and
/// the distribution spec define them; `oci:DIR:TAG` is exactly that tag.
pub fn image_reference_rows() -> Vec<Row> {
    vec![
        unpack(
            "oci:@F/two:three",
            "has no image tagged \"three\"; its tags: one, two",
        ),
        unpack(
            "oci:@F/untagged",
            "holds 2 images and no tag was given; name one as oci:",
        ),
        unpack("oci:@F/two", "holds 2 images and no tag was given"),
        unpack("oci:@F/two:", "holds 2 images and no tag was given"),
        unpack("oci:@F/nowhere", "@F/nowhere not found"),
        unpack(
            "oci:@F/not-a-layout",
            "is not an OCI image layout (no index.json)",
        ),
        unpack(
            "oci:@F/a-file",
            "is not an OCI image layout (no index.json)",
        ),
        unpack("ftp://host/img", "unsupported transport \"ftp\""),
        unpack("s3:/bucket/x", "unsupported transport \"s3\""),
        unpack("", "empty image reference"),
        unpack("Bad Name!", "give a transport"),
        unpack("../etc", "invalid image reference \"../etc\""),
        unpack(
            "no-such-image",
            "image \"no-such-image\" not found in the local store",
        ),
        unpack(
            "no-such-image:v2",
            "image \"no-such-image:v2\" not found in the local store",
        ),
        unpack(
            "\u{1b}[31mred",
            "invalid image reference \"\\u{1b}[31mred\"",
        ),
        unpack("ostree-bogus:oci:/x", "invalid image reference"),
        unpack("oci-archive:@D/nowhere.tar", "nowhere.tar"),
        lint("oci:@F/two:three", "has no image tagged \"three\""),
        lint("oci:@F/untagged", "holds 2 images and no tag was given"),
        lint("ftp://host/img", "unsupported transport \"ftp\""),
        lint("oci:@F/nowhere", "not found"),
        row(
            1,
            "reading @D/nowhere",
            &["container", "lint", "--rootfs", "@D/nowhere"],
        ),
        disk("oci:@F/two:three", "has no image tagged \"three\""),
        disk("oci:@F/untagged", "holds 2 images"),
        disk("oci:@F/nohistory", "has no history in its config"),
        disk("ftp://host/img", "unsupported transport \"ftp\""),
        disk("Not A Ref", "invalid image reference"),
        disk(
            "missing-image",
            "image \"missing-image\" not found in the local store",
        ),
        row(
            1,
            "unsupported transport \"ftp\"",
            &["push", "ftp://host/img", "oci:@D/out"],
        ),
        row(
            1,
            "invalid image reference",
            &["push", "oci:@F/plain", "Bad Dest!"],
        ),
        row(
            1,
            "unsupported transport \"s3\"",
            &["push", "oci:@F/plain", "s3:/bucket/x"],
        ),
    ]
}

/// References as typed with a stray character, and references no spec allows.
pub fn typed_reference_rows() -> Vec<Row> {
    vec![
        unpack("oci:@F/two:one\n", "starts or ends with white space"),
        unpack("oci:@F/two:one ", "starts or ends with white space"),
        unpack(" oci:@F/two:one", "starts or ends with white space"),
        lint("oci:@F/two:one\n", "holds a control character"),
        unpack(
            "oci:@F/two@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "reference names a tag (PATH:TAG), not a digest",
        ),
        unpack("oci:@F/two:-bad", "is not a tag (1 to 128 letters"),
        row(
            1,
            "is not a tag (1 to 128 letters",
            &[
                "push",
                "oci:@F/plain",
                &format!("oci:@D/pd:{}", "a".repeat(300)),
            ],
        ),
        row(
            1,
            "starts or ends with white space",
            &["push", "oci:@F/plain", "oci:@D/pd:t "],
        ),
        row(
            1,
            "holds 2 images and no tag was given",
            &["push", "oci:@F/untagged", "oci:@D/pd:x"],
        ),
        row(
            1,
            "--digestfile \"@D/nodir/df\": output directory @D/nodir does not exist",
            &[
                "push",
                "--digestfile",
                "@D/nodir/df",
                "oci:@F/plain",
                "oci:@D/pd:t",
            ],
        ),
        row(
            1,
            "is a directory; name a file",
            &["push", "--digestfile", "@D", "oci:@F/plain", "oci:@D/pd:t"],
        ),
        row(
            1,
            "holds a control character; name a file without one",
            &[
                "push",
                "--digestfile",
                "@D/d\nf",
                "oci:@F/plain",
                "oci:@D/pd:t",
            ],
        ),
        row(
            1,
            "the tag \"bad tag\" is not a tag",
            &["push", "oci:@F/plain", "docker://quay.io/org/img:bad tag"],
        ),
    ]
}

/// What an image holds: not bootable, another architecture, no rootfs, hostile layers, more
/// than the budget, an output that exists.
pub fn image_content_rows() -> Vec<Row> {
    vec![
        disk("oci:@F/plain", "is not bootable"),
        disk("oci:@F/arm", "has architecture arm64; expected amd64"),
        disk(
            "oci:@F/norootfs",
            "has no \"rootfs\", which the OCI image spec requires",
        ),
        row(
            1,
            "exists; pass --force",
            &[
                "disk",
                "oci:@F/bootable",
                "--format",
                "raw",
                "-o",
                "@D/disk.raw",
            ],
        )
        .file("disk.raw", "user data")
        .needs(Need::Root),
        row(
            1,
            "--root-ssh-key @D/key does not look like an OpenSSH public key",
            &[
                "disk",
                "oci:@F/bootable",
                "-o",
                "@D/d.raw",
                "--root-ssh-key",
                "@D/key",
            ],
        )
        .file("key", "hello"),
        row(
            1,
            "--root-password-hash must be a crypt(3) hash",
            &[
                "disk",
                "oci:@F/bootable",
                "-o",
                "@D/d.raw",
                "--root-password-hash",
                "plaintext",
            ],
        ),
        row(
            1,
            "--root-password-hash must be a crypt(3) hash",
            &[
                "disk",
                "oci:@F/bootable",
                "-o",
                "@D/d.raw",
                "--root-password-hash",
                "$6$x\nroot2::0:0",
            ],
        ),
        row(
            1,
            "invalid kernel argument \"console=ttyS0\\nrd.break\"",
            &[
                "disk",
                "oci:@F/bootable",
                "-o",
                "@D/d.raw",
                "--karg",
                "console=ttyS0\nrd.break",
            ],
        ),
        row(
            1,
            "unknown field `hostname`, expected one of `user`, `group`, `filesystem`, `kernel`",
            &[
                "disk",
                "oci:@F/bootable",
                "-o",
                "@D/d.raw",
                "--config",
                "@D/c.toml",
            ],
        )
        .file("c.toml", "[customizations]\nhostname = \"x\"\n"),
        row(
            1,
            "customizations.filesystem mountpoint \"/var/data\": imgmode disk lays out / and /boot",
            &[
                "disk",
                "oci:@F/bootable",
                "--format",
                "vhd",
                "-o",
                "@D/d.vhd",
                "--config",
                "@D/c.json",
            ],
        )
        .file(
            "c.json",
            r#"{"customizations": {"filesystem": [{"mountpoint": "/var/data", "minsize": "1 GiB"}]}}"#,
        ),
        row(
            1,
            "customizations.user \"alice\": key is not an OpenSSH public key",
            &[
                "disk",
                "oci:@F/bootable",
                "--format",
                "gce",
                "-o",
                "@D/d.tar.gz",
                "--config",
                "@D/c.toml",
            ],
        )
        .file(
            "c.toml",
            "[[customizations.user]]\nname = \"alice\"\npassword = \"secret-pw\"\nkey = \"nope\"\n",
        ),
        row(
            1,
            "customizations.installer is for the installer ISO (imgmode iso); imgmode disk writes no installer",
            &[
                "disk",
                "oci:@F/bootable",
                "-o",
                "@D/d.qcow2",
                "--config",
                "@D/c.toml",
            ],
        )
        .file(
            "c.toml",
            "[customizations.installer]\ninstallation-disk = \"/dev/vda\"\n",
        ),
        row(
            1,
            "customizations.installer: kickstart is anaconda's; imgmode's installer is not anaconda",
            &["iso", "oci:@F/bootable", "-o", "@D/i.iso", "--config", "@D/c.toml"],
        )
        .file(
            "c.toml",
            "[customizations.installer.kickstart]\ncontents = \"autopart\"\n",
        ),
        row(
            1,
            "customizations.installer installation-disk \"vda\" is not an absolute path to a disk",
            &["iso", "oci:@F/bootable", "-o", "@D/i.iso", "--config", "@D/c.json"],
        )
        .file(
            "c.json",
            r#"{"customizations": {"installer": {"installation-disk": "vda"}}}"#,
        ),
        row(
            1,
            "is this an ISO written by imgmode iso, mounted there?",
            &["install-from-iso", "--disk", "@D/disk.img", "@D/no-iso"],
        ),
        unpack(
            "oci:@F/norootfs",
            "has no \"rootfs\", which the OCI image spec requires",
        ),
        unpack(
            "oci:@F/hostile",
            "hostile archive: entry \"../escape\" has a \"..\" component",
        ),
        row(
            1,
            "exists and is not empty",
            &["image", "unpack", "oci:@F/two:one", "@D/out"],
        )
        .file("out/mine", "keep"),
        row(
            1,
            "unpack budget",
            &[
                "image",
                "unpack",
                "oci:@F/two:one",
                "@D/out",
                "--max-size",
                "1",
            ],
        ),
        lint("oci:@F/norootfs", "has no \"rootfs\""),
        unpack(
            "oci:@F/nolayout",
            "has no oci-layout file: not an OCI image layout",
        ),
        unpack(
            "oci:@F/layout9",
            "says imageLayoutVersion \"9.9\"; imgmode reads layouts of version 1.x",
        ),
        unpack(
            "oci:@F/diffid-wrong",
            "but the image config's rootfs.diff_ids says sha256:0000",
        ),
        unpack(
            "oci:@F/diffid-missing",
            "has 1 layer(s) but its config lists 0 in rootfs.diff_ids",
        ),
        unpack(
            "oci:@F/schema1",
            "has schemaVersion 1; OCI and Docker v2 manifests have 2",
        ),
        lint("oci:@F/diffid-wrong", "rootfs.diff_ids says"),
    ]
}

const IBI: &str = "apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nseedImage: quay.io/org/seed:4.17\nseedVersion: 4.17.0\ninstallationDisk: /dev/vda\npullSecret: '{\"auths\":{}}'\n";

/// `seed check` of seed images whose labels are wrong or do not match.
pub fn seed_image_rows() -> Vec<Row> {
    let check = |image: &str, says: &str| {
        row(
            1,
            says,
            &["seed", "check", image, "--config", "@D/ibi.yaml"],
        )
        .file("ibi.yaml", IBI)
    };
    vec![
        check(
            "oci:@F/seed-badlabel",
            "parsing the seed image's com.openshift.lifecycle-agent.seed_cluster_info label",
        ),
        check("oci:@F/plain", "it is not a seed image"),
        check(
            "oci:@F/seed-04",
            "seed_format_version is \"04\", not a number such as 4",
        ),
        row(
            1,
            "networkConfig is not an nmstate mapping",
            &[
                "seed",
                "check",
                "oci:@F/seed-416",
                "--config",
                "@D/ibi.yaml",
            ],
        )
        .file(
            "ibi.yaml",
            &format!("{IBI}networkConfig: \"::: not nmstate\"\n"),
        ),
        check("oci:@F/seed-416", "seed version mismatch"),
        check(
            "oci:@F/seed-v9",
            "seed image format version mismatch: expected 4, got 9",
        ),
        check(
            "oci:@F/two:three",
            "has no image tagged \"three\"; its tags: one, two",
        ),
        row(
            1,
            "reading @D/nope",
            &["seed", "check", "oci:@F/seed-416", "--config", "@D/nope"],
        ),
        row(
            1,
            "seedVersion \"4.17\" is not a release version",
            &[
                "seed",
                "check",
                "oci:@F/seed-416",
                "--config",
                "@D/ibi.yaml",
            ],
        )
        .file("ibi.yaml", &IBI.replace("4.17.0", "4.17")),
    ]
}

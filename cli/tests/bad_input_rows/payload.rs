//! Payloads and mirrors: `payload verify` and `payload add` trust nothing in the payload;
//! `mirror` names bad lines and leaves nothing behind.

use super::{row, Row};
use crate::{copy_payload, edit_record, first_blob};
use std::path::Path;

/// `payload verify @D/p` of the fixture payload copied and changed by `prep`.
fn verify(prep: fn(&Path, &Path), says: &str) -> Row {
    row(1, says, &["payload", "verify", "@D/p"]).prep(prep)
}

/// `payload add @D/p --store @D/store` of the changed copy: refused, no store written.
fn add(prep: fn(&Path, &Path), says: &str) -> Row {
    row(1, says, &["payload", "add", "@D/p", "--store", "@D/store"]).prep(prep)
}

fn arch_edited(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    edit_record(d, |v| v["architectures"] = serde_json::json!(["arm64"]));
}
fn id_edited(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    edit_record(d, |v| {
        v["id"] = serde_json::json!(format!("sha256:{}", "0".repeat(64)))
    });
}
fn unknown_field(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    edit_record(d, |v| v["trusted"] = serde_json::json!(true));
}
fn count_edited(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    edit_record(d, |v| v["images"][0]["manifests"] = serde_json::json!(3));
}
fn repo_edited(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    edit_record(d, |v| {
        v["images"][0]["repo"] = serde_json::json!("other/repo")
    });
}
fn tag_edited(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    edit_record(d, |v| v["images"][0]["tag"] = serde_json::json!("2"));
}
fn bad_repo_name(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    edit_record(d, |v| {
        v["images"][0]["repo"] = serde_json::json!("../../etc")
    });
}
fn symlinked_blob(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    let data = first_blob(d);
    let outside = d.join("outside");
    std::fs::rename(&data, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &data).unwrap();
}
fn corrupted_blob(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    let data = first_blob(d);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&data, bytes).unwrap();
}
fn symlinked_blobs_dir(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    let blobs = d.join("p/docker/registry/v2/blobs");
    std::fs::rename(&blobs, d.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(d.join("elsewhere"), &blobs).unwrap();
}
fn symlinked_link(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    let tag = d.join("p/docker/registry/v2/repositories/test/plain/_manifests/tags/1/current/link");
    let text = std::fs::read_to_string(&tag).unwrap();
    std::fs::write(d.join("link-elsewhere"), text).unwrap();
    std::fs::remove_file(&tag).unwrap();
    std::os::unix::fs::symlink(d.join("link-elsewhere"), &tag).unwrap();
}
const REPO: &str = "p/docker/registry/v2/repositories/test/plain";
fn extra_tag(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    let tags = d.join(REPO).join("_manifests/tags");
    crate::cp_a(&tags.join("1"), &tags.join("2"));
}
fn extra_repository(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    crate::cp_a(
        &d.join(REPO),
        &d.join("p/docker/registry/v2/repositories/test/other"),
    );
}
fn stray_file(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    std::fs::write(d.join(REPO).join("stray"), "x").unwrap();
}
fn no_layer_links(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    std::fs::remove_dir_all(d.join(REPO).join("_layers")).unwrap();
}
fn padded_link(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    let link = d.join(REPO).join("_manifests/tags/1/current/link");
    let text = std::fs::read_to_string(&link).unwrap();
    std::fs::write(&link, format!("\n{text}\n\n")).unwrap();
}
fn no_record(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    std::fs::remove_file(d.join("p/imgmode-payload.json")).unwrap();
}
fn malformed_record(d: &Path, fx: &Path) {
    copy_payload(d, fx);
    std::fs::write(d.join("p/imgmode-payload.json"), "{").unwrap();
}

pub fn payload_rows() -> Vec<Row> {
    const EDITED: &str = "the record was edited or the payload is damaged";
    vec![
        verify(
            extra_tag,
            "tags/2/current/link is not part of any image imgmode-payload.json lists",
        ),
        verify(
            extra_repository,
            "is not part of any image imgmode-payload.json lists",
        ),
        verify(stray_file, "test/plain/stray is not part of any image"),
        verify(
            no_layer_links,
            "is missing (a registry could not serve the image)",
        ),
        verify(padded_link, "current/link holds \"\\nsha256:"),
        add(extra_repository, "is not part of any image"),
        add(no_layer_links, "is missing"),
        verify(
            arch_edited,
            "the architectures are [\"arm64\"]; the images' configs say [\"amd64\"]",
        ),
        verify(id_edited, "the payload's ID is sha256:0000"),
        verify(unknown_field, "unknown field `trusted`"),
        verify(count_edited, "has 3 manifests; it has 1"),
        verify(repo_edited, "which the repositories do not link"),
        verify(tag_edited, EDITED),
        verify(bad_repo_name, "repository name \"../../etc\" is not valid"),
        verify(
            symlinked_blob,
            "is not a regular file (a symlink, a device or a directory)",
        ),
        verify(corrupted_blob, "is corrupted: its sha256 is"),
        verify(
            symlinked_blobs_dir,
            "blobs is not a directory (a symlink or a file)",
        ),
        verify(symlinked_link, "current/link is a symlink"),
        verify(
            no_record,
            "is not an imgmode mirror directory (no imgmode-payload.json",
        ),
        verify(malformed_record, "imgmode-payload.json is malformed"),
        row(
            1,
            "is not an imgmode mirror directory",
            &["payload", "verify", "@D/nowhere"],
        ),
        add(arch_edited, EDITED),
        add(id_edited, "the payload's ID is sha256:0000"),
        add(unknown_field, "unknown field `trusted`"),
        add(symlinked_blob, "is not a regular file"),
        add(corrupted_blob, "is corrupted"),
        row(
            1,
            "@D/nowhere",
            &["payload", "add", "@D/nowhere", "--store", "@D/store"],
        ),
        row(
            1,
            "sha256:nope",
            &["payload", "remove", "sha256:nope", "--store", "@D/store"],
        ),
    ]
}

pub fn mirror_rows() -> Vec<Row> {
    let m = |image: &str, says: &str| row(1, says, &["mirror", "--image", image, "--dir", "@D/m"]);
    vec![
        row(1, "are both given as t/p:1; a tag names one image", &["mirror", "--image", "oci:@F/two:one=t/p:1", "--image", "oci:@F/two:two=t/p:1", "--dir", "@D/m"]),
        m("oci:@F/plain=", "nothing follows '='; write"),
        m("oci:@F/plain=t/p:1\n", "holds spaces or control characters"),
        row(1, "holds \"mine\" and is not an imgmode mirror directory", &["mirror", "--image", "oci:@F/plain=t/p:1", "--dir", "@D/m"]).file("m/mine", "keep"),
        row(
            1,
            "@D/list:3: \"!!! garbage @@\" is not an image to mirror",
            &["mirror", "--images", "@D/list", "--dir", "@D/m"],
        )
        .file("list", "# images\nquay.io/org/a:1\n!!! garbage @@\n"),
        row(
            1,
            "@D/list:2: \"quay.io/Org/b:1\" is not an image to mirror (one IMAGE or IMAGE=REPO[:TAG] per line, # comments)",
            &["mirror", "--images", "@D/list", "--dir", "@D/m"],
        )
        .file("list", "quay.io/org/a:1\nquay.io/Org/b:1 # upper case\n"),
        row(
            1,
            "reading --images @D/nope",
            &["mirror", "--images", "@D/nope", "--dir", "@D/m"],
        ),
        m(
            "quay.io/Org/img:1",
            "repository name \"Org/img\" is not valid",
        ),
        m(
            "img:latest",
            "only registry references name their repository",
        ),
        m("oci:@F/plain", "reference names no repository; write"),
        m("quay.io/org/img@sha256:AB", "64 lowercase hex"),
        m("quay.io/org/img@md5:00", "unsupported algorithm"),
        m("ftp://h/x=repo:1", "unsupported transport \"ftp\""),
        m("oci:@F/plain=repo:bad!tag", "tag \"bad!tag\" is not valid"),
        m(
            "a b",
            "\"a b\" is not an image reference: it is empty or holds spaces or control characters",
        ),
        m(
            "quay.io/org/a:1\nquay.io/org/b:1",
            "holds spaces or control characters",
        ),
        m("oci:@F/nowhere=test/x:1", "nowhere"),
        m("oci:@F/two:three=test/x:1", "three"),
        row(
            1,
            "no images: give --image IMAGE (repeatable) or --images FILE",
            &["mirror", "--dir", "@D/m"],
        ),
        row(
            1,
            "is given twice",
            &[
                "mirror",
                "--image",
                "oci:@F/plain=t/p:1",
                "--image",
                "oci:@F/plain=t/p:1",
                "--dir",
                "@D/m",
            ],
        ),
    ]
}

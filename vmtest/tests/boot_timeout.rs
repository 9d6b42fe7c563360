//! A VM that never shows what a scenario waits for fails with the wait named, the time it
//! waited and the console's tail (the error class "VM boot timeout" of docs/errors.md).

use imgmode_vmtest::harness::qemu::{Boot, Vm, VmConfig};
use std::time::Duration;

#[tokio::test]
async fn a_boot_timeout_names_the_wait_and_carries_the_console_tail() {
    use imgmode_testkit::Need;
    imgmode_testkit::require!(Need::Tool("qemu-system-x86_64"), Need::Tool("qemu-img"));
    let t = tempfile::tempdir().unwrap();
    let disk = t.path().join("blank.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .status()
        .expect("qemu-img runs (Debian package qemu-utils)");
    assert!(st.success());
    // a blank disk: SeaBIOS finds nothing to boot, the awaited line never comes
    let mut cfg = VmConfig::new(&disk, Boot::Bios);
    cfg.memory_mib = 256;
    cfg.cpus = 1;
    let mut vm = Vm::start(&cfg, &t.path().join("vm")).await.unwrap();
    let err = vm
        .wait_for_console("login:", Duration::from_secs(3))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("timed out after 3s waiting for \"login:\" on the console")
            && err.contains("--- console tail ---"),
        "{err}"
    );
    vm.quit().await.unwrap();
}

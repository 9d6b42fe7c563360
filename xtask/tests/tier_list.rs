//! `xtask vmtest --ci-tier --list`, run as CI runs xtask: the binary `cargo test` builds for
//! this test (`.ci/run` runs that binary, so that xtask's dependencies are compiled once).
//! It lists exactly the tier's scenarios and names every one left out, with its reason.

use std::process::Command;

#[test]
fn the_ci_tier_list_names_every_scenario_in_or_out() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["vmtest", "--ci-tier", "--list"])
        .output()
        .expect("running xtask");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let listed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let all = imgmode_vmtest::scenarios::all();
    let tier: Vec<&str> = all
        .iter()
        .filter(|s| s.not_in_ci.is_none())
        .map(|s| s.name)
        .collect();
    assert_eq!(listed, tier, "{stdout}");
    for s in all.iter().filter(|s| s.not_in_ci.is_some()) {
        let line = format!("==> vmtest {}: not in the CI tier: ", s.name);
        assert!(stderr.contains(&line), "{} is not named:\n{stderr}", s.name);
    }
}

//! The guest job protocol. A scenario's guest work is a shell script passed as a systemd
//! credential and run by a job unit (`job`) at every boot, once the boot's health report is
//! out; the script starts with `GUEST_PRELUDE` and reports on the results port: facts
//! (`FACT k=v`), `imgmode status --format json` between `STATUS-BEGIN` and `STATUS-END`, and
//! commands with their output and status (`RUN ...` / `RC N`), grouped in phases between
//! `IMGMODE-PHASE-N-BEGIN` and `-END` markers (`parse_phase`). `run_job` boots a VM with
//! such a job and waits for its report; [`time_to_ready`] times a boot for the benchmarks.

use crate::harness::qemu::{Boot, Vm, VmConfig};
use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Per-stage timeouts (TCG boots take 25-40 s here; leave headroom for a loaded machine).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);

/// A oneshot unit that runs the script in the credential `script` (`vmtest.*` credentials
/// imported) with its output on the results port; `unit` goes into its `[Unit]` section.
pub(crate) fn results_unit(description: &str, unit: &str, script: &str) -> String {
    format!(
        r#"[Unit]
Description={description}
{unit}
[Service]
Type=oneshot
ImportCredential=vmtest.*
StandardOutput=file:/dev/virtio-ports/org.imgmode.results
StandardError=inherit
ExecStart=/bin/sh -c 'exec sh "$CREDENTIALS_DIRECTORY/{script}"'
"#
    )
}

/// What every guest script starts with: `set -eu`, a report of the status a script ended with
/// when it was not 0 (`IMGMODE-SCRIPT-FAILED rc=N`, which fails the wait for its result at
/// once), and the helpers: `yesno CMD` prints yes/no, `run CMD` prints the command, its output
/// and `RC <status>` (the one way a step may fail without ending the script), `filemodes TAG
/// DIR...` lists every file under the directories with its mode and whether it holds a secret
/// as text (a private key, a pull secret, a kubeconfig's client key, an htpasswd hash; binary
/// files such as image blobs and databases are listed, not searched), for
/// [`file_modes`].
pub(crate) const GUEST_PRELUDE: &str = r#"set -eu
trap 'rc=$?; [ "$rc" -eq 0 ] || echo "IMGMODE-SCRIPT-FAILED rc=$rc"' EXIT
yesno() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
run() { echo "RUN $*"; rc=0; "$@" 2>&1 || rc=$?; echo "RC $rc"; }
filemodes() {
  t=$1; shift; echo "FILEMODES-$t-BEGIN"
  find "$@" -xdev -type f 2>/dev/null | while IFS= read -r f; do
    s=no
    grep -qsIE -e '-----BEGIN [A-Z ]*PRIVATE KEY-----' -e '"auths"[[:space:]]*:' -e 'client-key-data:' -e '^[^:#[:space:]]+:[$]2[aby][$]' "$f" && s=yes
    # a file that went away since find listed it (a temporary file another program renamed
    # into place, such as ssh-keygen's at boot) has no mode to report
    m=$(stat -c %a "$f" 2>/dev/null) || continue
    echo "$m $s $f"
  done
  echo "FILEMODES-$t-END"
}
"#;

/// `script` with [`GUEST_PRELUDE`] in front.
pub(crate) fn guest_script(script: &str) -> String {
    format!("{GUEST_PRELUDE}{script}")
}

/// `cfg` with the job unit running `script` at every boot, once the boot's health report is
/// out (see [`VmConfig::job_unit`]).
pub(crate) fn job(cfg: VmConfig, script: String) -> VmConfig {
    let unit = results_unit(
        "imgmode vmtest: layered job",
        "After=multi-user.target network-online.target\nWants=network-online.target\n",
        "vmtest.script",
    );
    cfg.job_unit("imgmode-vmtest-job.service", &unit)
        .credential("vmtest.script", guest_script(&script))
}

/// What a guest script printed between `DIAG-BEGIN` and `DIAG-END` ("" when nothing).
pub(crate) fn diag_section(report: &str) -> &str {
    report
        .split_once("DIAG-BEGIN")
        .and_then(|(_, r)| r.split_once("DIAG-END"))
        .map_or("", |(d, _)| d)
}

/// The private keys a guest listed between `KEYS-BEGIN` and `KEYS-END` (`imgmode internal
/// test-cluster keys`: fingerprint, then where), at least 8 (the test cluster has more).
pub(crate) fn key_inventory(who: &str, results: &str) -> Result<BTreeMap<String, String>> {
    let keys: BTreeMap<String, String> = results
        .split_once("KEYS-BEGIN")
        .and_then(|(_, r)| r.split_once("KEYS-END"))
        .map_or("", |(k, _)| k)
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .map(|(f, at)| (f.to_string(), at.to_string()))
        .collect();
    ensure!(
        keys.len() >= 8,
        "{who}: the key inventory lists {} private keys; the test cluster has more",
        keys.len()
    );
    Ok(keys)
}

/// The value of a `PREFIX rest` line in the guest's report.
pub(crate) fn report_line<'a>(report: &'a str, prefix: &str) -> Option<&'a str> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
}

/// The `filemodes TAG ...` listing of a report: every file as `MODE secret|- PATH`; fails when
/// it is missing or empty, or when a file holding a secret is readable by group or others.
pub(crate) fn file_modes(report: &str, tag: &str, what: &str) -> Result<String> {
    let body = report
        .split_once(&format!("FILEMODES-{tag}-BEGIN"))
        .and_then(|(_, r)| r.split_once(&format!("FILEMODES-{tag}-END")))
        .map(|(b, _)| b)
        .with_context(|| format!("{what}: the guest listed no file modes ({tag})"))?;
    let mut out = String::new();
    let mut open = vec![];
    let mut n = 0;
    for l in body.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = l.splitn(3, ' ');
        let (Some(mode), Some(secret), Some(path)) = (f.next(), f.next(), f.next()) else {
            anyhow::bail!("{what}: a file-mode line is malformed: {l:?}");
        };
        let m = u32::from_str_radix(mode, 8)
            .with_context(|| format!("{what}: the mode of {path} is {mode:?}"))?;
        let secret = secret == "yes";
        if secret && m & 0o077 != 0 {
            open.push(format!("{path} ({mode})"));
        }
        n += 1;
        out.push_str(&format!(
            "{mode:>4} {} {path}\n",
            if secret { "secret" } else { "-     " }
        ));
    }
    ensure!(n > 0, "{what}: the file-mode listing ({tag}) is empty");
    ensure!(
        open.is_empty(),
        "{what}: files holding a secret are readable by group or others: {}",
        open.join(", ")
    );
    Ok(out)
}

/// One phase's report.
#[derive(Debug, Default)]
pub(crate) struct Phase {
    pub(crate) facts: BTreeMap<String, String>,
    pub(crate) status: Option<GuestStatus>,
    /// (command, exit code, output)
    pub(crate) runs: Vec<(String, i32, String)>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GuestStatus {
    pub(crate) deployments: Vec<GuestDeployment>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct GuestDeployment {
    pub(crate) booted: bool,
    pub(crate) staged: bool,
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) checksum: String,
    pub(crate) container_image_reference: Option<String>,
    pub(crate) container_image_reference_digest: Option<String>,
}

/// Guest shell lines: `user` logs in over SSH to this machine's sshd with the private key of
/// the credential `vmtest.userkey` (copied 0600 for the login, removed after it); `FACT ssh=`
/// is what `id -un` and `id -Gn` printed there, or the error. [`Phase::logged_in`] checks it.
pub(crate) fn ssh_login_sh(user: &str) -> String {
    format!(
        r#"install -m 600 "$CREDENTIALS_DIRECTORY/vmtest.userkey" /run/vmtest-userkey
echo "FACT ssh=$(ssh -i /run/vmtest-userkey -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=30 {user}@127.0.0.1 'echo "$(id -un) $(id -Gn)"' 2>&1 | tr '\n' ' ')"
rm -f /run/vmtest-userkey
"#
    )
}

/// Guest shell lines: whether `user`'s password hash verifies the credential
/// `vmtest.password` (`FACT password=yes`), its home's owner, group and mode (`FACT home=`), and
/// the size of the `boot` partition (`FACT boot-bytes=`). [`Phase::account_applied`] checks
/// them.
pub(crate) fn account_sh(user: &str) -> String {
    format!(
        r#"hash=$(getent shadow {user} | cut -d: -f2)
echo "FACT password=$(perl -e 'print crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? "yes" : "no"' "$(cat "$CREDENTIALS_DIRECTORY/vmtest.password")" "$hash")"
echo "FACT home=$(stat -c '%U %G %a' /var/home/{user})"
echo "FACT boot-bytes=$(lsblk -bdno SIZE /dev/disk/by-label/boot)"
"#
    )
}

impl Phase {
    /// What [`account_sh`] reported: `user`'s password hash verifies the configured password,
    /// its home is its own with mode 700, and `/boot` has at least `boot_min` bytes (the
    /// configuration's `minsize`).
    pub(crate) fn account_applied(&self, user: &str, boot_min: u64) -> Result<()> {
        ensure!(
            self.fact("password") == "yes",
            "{user}'s password hash does not verify the config's password"
        );
        ensure!(
            self.fact("home") == format!("{user} {user} 700"),
            "{user}'s home is {:?}, expected {user}'s own with mode 700",
            self.fact("home")
        );
        ensure!(
            self.fact("boot-bytes").parse::<u64>().unwrap_or(0) >= boot_min,
            "/boot is {} bytes, under its minsize of {} MiB",
            self.fact("boot-bytes"),
            boot_min >> 20
        );
        Ok(())
    }

    /// The login of [`ssh_login_sh`] worked: it ran as `user`, a member of `group`.
    pub(crate) fn logged_in(&self, user: &str, group: &str) -> Result<()> {
        let ssh = self.fact("ssh");
        let mut words = ssh.split_whitespace();
        ensure!(
            words.next() == Some(user) && words.any(|g| g == group),
            "ssh {user}@ with the config's key: expected `{user} … {group}`, got {ssh:?}"
        );
        Ok(())
    }

    /// The booted deployment runs the image of manifest digest `digest`.
    pub(crate) fn booted_image(&self, digest: &str) -> Result<()> {
        let booted = self.booted()?;
        ensure!(
            booted.container_image_reference_digest.as_deref() == Some(digest),
            "booted {:?}, not the image {digest}",
            booted.container_image_reference_digest
        );
        Ok(())
    }

    /// `FACT cmdline` (the guest's `/proc/cmdline`) holds the config's append `karg`.
    pub(crate) fn has_append_karg(&self, karg: &str) -> Result<()> {
        ensure!(
            self.fact("cmdline").split_whitespace().any(|k| k == karg),
            "the config's append {karg} is not on the kernel command line: {}",
            self.fact("cmdline")
        );
        Ok(())
    }

    pub(crate) fn fact(&self, k: &str) -> &str {
        self.facts.get(k).map(String::as_str).unwrap_or("?")
    }

    pub(crate) fn booted(&self) -> Result<GuestDeployment> {
        self.status
            .as_ref()
            .and_then(|s| s.deployments.iter().find(|d| d.booted).cloned())
            .context("the guest's status lists no booted deployment")
    }

    pub(crate) fn staged(&self) -> Option<GuestDeployment> {
        self.status
            .as_ref()
            .and_then(|s| s.deployments.iter().find(|d| d.staged).cloned())
    }

    /// The first command whose line contains `part`: (command, exit status, output).
    pub(crate) fn run_with(&self, part: &str) -> Result<&(String, i32, String)> {
        self.runs
            .iter()
            .find(|(c, _, _)| c.contains(part))
            .with_context(|| format!("the guest ran no command with {part:?}"))
    }

    /// Every command whose line starts with `prefix`, in the order they ran.
    pub(crate) fn runs_of(&self, prefix: &str) -> Vec<&(String, i32, String)> {
        self.runs
            .iter()
            .filter(|(c, _, _)| c.starts_with(prefix))
            .collect()
    }

    /// The first command whose line contains `part` failed, and its output says `want`.
    pub(crate) fn refused(&self, part: &str, want: &str) -> Result<()> {
        let (c, rc, out) = self.run_with(part)?;
        ensure!(*rc != 0, "{c} succeeded; it must be refused");
        ensure!(
            out.contains(want),
            "{c} failed (rc {rc}) without saying {want:?}:\n{out}"
        );
        Ok(())
    }

    /// The one command whose line starts with `cmd`; it must have exited 0.
    pub(crate) fn ran_ok(&self, cmd: &str) -> Result<&str> {
        let (c, rc, out) = self
            .runs
            .iter()
            .find(|(c, _, _)| c.starts_with(cmd))
            .with_context(|| format!("the guest did not run {cmd:?}"))?;
        ensure!(*rc == 0, "{c} failed in the guest (rc {rc}):\n{out}");
        Ok(out)
    }
}

/// Parse the section of `results` between the phase's markers.
pub(crate) fn parse_phase(results: &str, n: u32) -> Result<Phase> {
    let begin = format!("IMGMODE-PHASE-{n}-BEGIN");
    let end = format!("IMGMODE-PHASE-{n}-END");
    let start = results
        .find(&begin)
        .with_context(|| format!("no {begin} in the results"))?;
    let body = &results[start + begin.len()..];
    let body = &body[..body
        .find(&end)
        .with_context(|| format!("no {end} in the results"))?];
    let mut p = Phase::default();
    let mut lines = body.lines().peekable();
    while let Some(l) = lines.next() {
        if let Some(f) = l.strip_prefix("FACT ") {
            if let Some((k, v)) = f.split_once('=') {
                p.facts.insert(k.to_string(), v.trim().to_string());
            }
        } else if l == "STATUS-BEGIN" {
            let mut json = String::new();
            for l in lines.by_ref() {
                if l == "STATUS-END" {
                    break;
                }
                json.push_str(l);
                json.push('\n');
            }
            p.status = Some(
                serde_json::from_str(&json)
                    .with_context(|| format!("parsing the guest's status: {json}"))?,
            );
        } else if let Some(cmd) = l.strip_prefix("RUN ") {
            let mut out = String::new();
            let mut rc = -1;
            for l in lines.by_ref() {
                if let Some(r) = l.strip_prefix("RC ") {
                    rc = r.trim().parse().unwrap_or(-1);
                    break;
                }
                out.push_str(l);
                out.push('\n');
            }
            p.runs.push((cmd.to_string(), rc, out));
        }
    }
    Ok(p)
}

/// Wait for phase `n` to end and parse it.
pub(crate) async fn phase(vm: &mut Vm, n: u32, timeout: Duration) -> Result<Phase> {
    vm.wait_for_result(&format!("IMGMODE-PHASE-{n}-END"), timeout)
        .await?;
    let results = std::fs::read_to_string(vm.dir().join("results.log"))?;
    parse_phase(&results, n)
}

/// Boot `cfg`, wait for the phase's end marker, and read the results (console tail on error).
pub(crate) async fn run_job(
    cfg: &VmConfig,
    dir: &Path,
    what: &str,
    timeout: Duration,
) -> Result<String> {
    Ok(run_job_timed(cfg, dir, what, timeout, false).await?.0)
}

/// [`run_job`], and with `timed` the wall-clock seconds from QEMU's start until the job
/// reported `UPTIME-READY` (the boot's startup was over and, on an installed disk, post-pivot
/// done).
pub(crate) async fn run_job_timed(
    cfg: &VmConfig,
    dir: &Path,
    what: &str,
    timeout: Duration,
    timed: bool,
) -> Result<(String, Option<f64>)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut vm = Vm::start(cfg, dir).await?;
    let mut ready = None;
    let waited = async {
        if timed {
            vm.wait_for_result("UPTIME-READY", timeout).await?;
            ready = Some(vm.elapsed().as_secs_f64());
        }
        vm.wait_for_result("IMGMODE-PHASE-1-END", timeout).await
    }
    .await;
    if let Err(e) = waited {
        let tail = vm.console_tail(40);
        let _ = vm.quit().await;
        return Err(e.context(format!("{what} (console tail):\n{tail}")));
    }
    let results = std::fs::read_to_string(dir.join("results.log"))?;
    vm.wait_shutdown(SHUTDOWN_TIMEOUT)
        .await
        .with_context(|| format!("{what} did not power off"))?;
    Ok((results, ready))
}

/// A unit that reports readiness on the results port once startup is over (a job: it runs
/// after the boot's health report).
const READY_UNIT: &str = "\
[Unit]
Description=imgmode vmtest: ready marker
After=multi-user.target

[Service]
Type=oneshot
StandardOutput=file:/dev/virtio-ports/org.imgmode.results
ExecStart=/bin/echo IMGMODE-READY
";

/// Seconds from QEMU start until the guest's startup is over (`running`) and it says so; the VM
/// is stopped afterwards. Used by the benchmarks.
pub async fn time_to_ready(disk: &Path, boot: Boot, dir: &Path) -> Result<f64> {
    let cfg = VmConfig::new(disk, boot).job_unit("imgmode-ready.service", READY_UNIT);
    let mut vm = Vm::start(&cfg, dir).await?;
    let r = vm.wait_for_result("IMGMODE-READY", BOOT_TIMEOUT).await;
    let secs = vm.elapsed().as_secs_f64();
    vm.quit().await?;
    r?;
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_reports_parse() {
        let r = "junk\nIMGMODE-PHASE-2-BEGIN\nFACT karg=yes\nSTATUS-BEGIN\n{\"deployments\":[{\"booted\":true,\"staged\":false,\"container-image-reference\":\"x\",\"container-image-reference-digest\":\"sha256:1\"}]}\nSTATUS-END\nRUN imgmode rollback\nNext boot: a\nRC 0\nIMGMODE-PHASE-2-END\n";
        let p = parse_phase(r, 2).unwrap();
        assert_eq!(p.fact("karg"), "yes");
        assert_eq!(p.fact("rsyslog"), "?");
        assert_eq!(
            p.booted()
                .unwrap()
                .container_image_reference_digest
                .as_deref(),
            Some("sha256:1")
        );
        assert_eq!(p.ran_ok("imgmode rollback").unwrap(), "Next boot: a\n");
        assert!(p.ran_ok("imgmode switch").is_err());
        assert!(parse_phase(r, 3).is_err());
    }
}

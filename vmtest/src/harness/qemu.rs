//! One QEMU virtual machine under test: process, QMP control, serial console, results port.
//!
//! - QEMU runs with `-accel tcg -cpu` [`CPU`] (KVM hangs on these machines) and `-display none`.
//! - QMP is a unix socket driven with the `qapi` crate; every event is appended to
//!   `qmp-events.jsonl` in the scenario directory.
//! - The serial console goes to `console.log`, which [`Vm::wait_for_console`] tails; kernel
//!   panics and emergency-mode prompts fail the wait at once.
//! - The guest reports through a virtio-serial port named [`RESULTS_PORT`]
//!   (`/dev/virtio-ports/org.imgmode.results` in the guest), captured to `results.log`.
//! - Jobs reach the guest as systemd credentials in SMBIOS type 11 strings
//!   ([`VmConfig::credentials`]); with systemd's `systemd.extra-unit.*` and
//!   `systemd.unit-dropin.*` credentials a scenario adds units without modifying the image.
//! - Every boot of every VM is judged: the health unit ([`crate::harness::health`]) waits for
//!   startup to finish, writes `systemctl is-system-running` with each failed unit and its
//!   journal tail to a second port ([`HEALTH_PORT`], captured to `health.log`), and only then
//!   starts the scenario's jobs ([`VmConfig::job_unit`], wanted by [`JOBS_TARGET`]). Each job
//!   prints its boot ID first, and [`Vm::wait_for_result`] fails unless that boot reported
//!   `running`; a boot that reported anything else fails [`Vm::wait_for_result`] and
//!   [`Vm::wait_shutdown`] too.

use crate::harness::health::{self, parse_health, HealthReport, HEALTH_PORT, JOBS_TARGET};
use crate::harness::timeline::{self, strip_ansi};
use anyhow::{anyhow, bail, ensure, Context, Result};
use futures::StreamExt;
use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Name of the virtio-serial port the guest writes results to.
pub const RESULTS_PORT: &str = "org.imgmode.results";

/// What a guest script prints when it ends with a status other than 0 (its `set -e` stopped
/// it); see `crate::harness::guest::GUEST_PRELUDE`.
pub const SCRIPT_FAILED: &str = "IMGMODE-SCRIPT-FAILED";

/// Console lines that mean the boot has failed; waiting further is pointless.
pub const FATAL_CONSOLE_PATTERNS: &[&str] = &[
    "Kernel panic - not syncing",
    "You are in emergency mode",
    "Entering emergency mode",
    "Give root password for maintenance",
    "dracut Warning: Could not boot",
    "Cannot open access to console, the root account is locked",
    "error: file `",
    "error: can't find command",
    "No bootable device",
    // the installation ISO's unit failed: the install will not happen
    "Failed to start imgmode-ibi-inst",
    // the ibi scenario's live checks failed: their report will never come
    "Failed to start imgmode-vmtest-liv",
];

/// How the VM starts.
#[derive(Debug, Clone)]
pub enum Boot {
    /// SeaBIOS, booting the first disk through its bootloader.
    Bios,
    /// OVMF; the variable store is copied into the scenario directory.
    Uefi,
    /// QEMU loads this kernel and initramfs itself (`-kernel/-initrd/-append`).
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
}

/// QEMU arguments for the virtio SCSI controller [`Vm::attach_cdrom`] plugs CD-ROMs into.
pub const SCSI_CONTROLLER: [&str; 2] = ["-device", "virtio-scsi-pci,id=scsi0"];

#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The disk to boot; the VM writes to a qcow2 overlay in the scenario directory, so the
    /// disk itself is never modified and can be shared by scenarios.
    pub disk: PathBuf,
    /// The disk's format as QEMU names it; `None`: what `qemu-img info` probes. A fixed VHD
    /// must be named (`vpc`): its footer is at its end only, so the probe takes it for raw.
    pub disk_format: Option<&'static str>,
    pub boot: Boot,
    pub memory_mib: u32,
    pub cpus: u32,
    /// systemd credentials passed as SMBIOS type 11 strings (name, value).
    pub credentials: Vec<(String, String)>,
    /// User-mode networking with a virtio NIC.
    pub network: bool,
    /// Extra QEMU arguments.
    pub extra_args: Vec<String>,
    /// Why a boot of this VM may end before startup finishes (a unit of the image reboots
    /// during startup, as the installation ISO's does): such a boot may report `stopping`,
    /// with no failed unit, or nothing. `None`: every boot must reach `running`.
    pub unfinished_startup: Option<&'static str>,
}

impl VmConfig {
    pub fn new(disk: impl Into<PathBuf>, boot: Boot) -> Self {
        Self {
            disk: disk.into(),
            disk_format: None,
            boot,
            memory_mib: 2048,
            cpus: 2,
            credentials: Vec::new(),
            network: false,
            extra_args: Vec::new(),
            unfinished_startup: None,
        }
    }

    /// Add a scenario job: the unit starts at every boot once the health unit has reported
    /// (wanted by [`JOBS_TARGET`]), and prints `IMGMODE-BOOT <boot-id>` first so that its
    /// result is tied to that boot's health report.
    pub fn job_unit(self, name: &str, text: &str) -> Self {
        self.extra_unit(name, text)
            .unit_dropin(
                &format!("{JOBS_TARGET}~{name}"),
                &format!("[Unit]\nWants={name}\n"),
            )
            .unit_dropin(
                &format!("{name}~imgmode-vmtest-boot"),
                "[Service]\nExecStartPre=/bin/sh -c 'echo IMGMODE-BOOT $$(cat /proc/sys/kernel/random/boot_id)'\n",
            )
    }

    /// The value of the credential `name`, if the configuration has it.
    pub fn credential_value(&self, name: &str) -> Option<&str> {
        self.credentials
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Add a systemd credential.
    pub fn credential(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.credentials.push((name.into(), value.into()));
        self
    }

    /// Add a unit that systemd installs at boot (credential `systemd.extra-unit.NAME`).
    pub fn extra_unit(self, name: &str, text: &str) -> Self {
        self.credential(format!("systemd.extra-unit.{name}"), text)
    }

    /// Add a drop-in to a unit (credential `systemd.unit-dropin.UNIT`).
    pub fn unit_dropin(self, unit: &str, text: &str) -> Self {
        self.credential(format!("systemd.unit-dropin.{unit}"), text)
    }
}

/// Paths of firmware files from Debian's `ovmf` package.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The QEMU command line for a configuration (pure; paths inside `dir`).
/// The guest CPU: every feature TCG emulates, less hardware virtualisation. With SVM (or VMX)
/// the guest's udev loads kvm and kvm_amd (kvm_intel) at every boot, which under TCG made a
/// boot of the base disk to its login prompt 57 s on average (48 to 64 s, four boots) against
/// 49 s (45 to 50 s) without; no guest here runs VMs of its own.
///
/// Nor ERMS and FSRM ("enhanced/fast short REP MOVSB"): with them the guest's kernel and
/// glibc copy and clear memory with `rep movsb`/`rep stosb`, which TCG runs a byte at a time,
/// and a warm reset left pages that held code on the slow path of every write. Measured on
/// the base disk (QEMU 10.0, 2 vCPUs, 3 GiB): QEMU start to the job 27.9 s with them against
/// 22.9 s without; in the guest, `dd` 400 MiB into tmpfs 4.7 s against 3.9 s, out of it
/// 1.0 s against 0.26 s, `tar -x` of 412 MiB of /usr/lib 9.5 s against 7.3 s; and the boot
/// after a `system_reset` 34.1 s against 29.0 s in a fresh QEMU with them, 27.4 s against
/// 27.4 s without (the IBI's first boot follows such a reset).
pub const CPU: &str = "max,svm=off,vmx=off,erms=off,fsrm=off";

pub fn qemu_args(cfg: &VmConfig, dir: &Path) -> Vec<String> {
    let p = |name: &str| dir.join(name).display().to_string();
    let mut a: Vec<String> = vec![
        "-name".into(),
        "imgmode-vmtest".into(),
        "-machine".into(),
        "q35".into(),
        "-accel".into(),
        "tcg".into(),
        "-cpu".into(),
        CPU.into(),
        "-smp".into(),
        cfg.cpus.to_string(),
        "-m".into(),
        format!("{}M", cfg.memory_mib),
        "-display".into(),
        "none".into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", p("qmp.sock")),
        "-chardev".into(),
        format!("file,id=console,path={}", p("console.log")),
        "-serial".into(),
        "chardev:console".into(),
        "-device".into(),
        "virtio-serial-pci,id=vser".into(),
        "-chardev".into(),
        format!("file,id=results,path={}", p("results.log")),
        "-device".into(),
        format!("virtserialport,bus=vser.0,chardev=results,name={RESULTS_PORT}"),
        "-chardev".into(),
        format!("file,id=health,path={}", p("health.log")),
        "-device".into(),
        format!("virtserialport,bus=vser.0,chardev=health,name={HEALTH_PORT}"),
        // bootindex: firmware boots this disk before any disk a scenario attaches (index 0 is
        // taken by the option ROM when QEMU loads a kernel itself)
        "-drive".into(),
        format!(
            "file={},format=qcow2,if=none,id=disk0,cache=unsafe",
            p("overlay.qcow2")
        ),
        "-device".into(),
        "virtio-blk-pci,drive=disk0,bootindex=1".into(),
        "-device".into(),
        "virtio-rng-pci".into(),
    ];
    match &cfg.boot {
        Boot::Bios => {}
        Boot::Uefi => {
            a.extend([
                "-drive".into(),
                format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", p("OVMF_VARS.fd")),
            ]);
        }
        Boot::Direct {
            kernel,
            initrd,
            append,
        } => {
            a.extend([
                "-kernel".into(),
                kernel.display().to_string(),
                "-initrd".into(),
                initrd.display().to_string(),
                "-append".into(),
                append.clone(),
            ]);
        }
    }
    if cfg.network {
        a.extend(["-nic".into(), "user,model=virtio-net-pci".into()]);
    } else {
        a.extend(["-nic".into(), "none".into()]);
    }
    let health = health::credentials();
    for (name, value) in health.iter().chain(&cfg.credentials) {
        // SMBIOS strings cannot hold commas unescaped; binary credentials avoid quoting.
        a.extend([
            "-smbios".into(),
            format!(
                "type=11,value=io.systemd.credential.binary:{name}={}",
                base64(value.as_bytes())
            ),
        ]);
    }
    a.extend(cfg.extra_args.iter().cloned());
    a
}

/// Standard base64 (RFC 4648) with padding.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

type Qmp = QapiService<QmpStreamTokio<WriteHalf<UnixStream>>>;

/// A running VM.
pub struct Vm {
    dir: PathBuf,
    child: tokio::process::Child,
    qmp: Qmp,
    events: mpsc::UnboundedReceiver<String>,
    seen_events: Vec<String>,
    console_offset: usize,
    started: Instant,
    unfinished_startup: Option<&'static str>,
    /// Times the console's lines (`console.times`) until the VM is dropped.
    _clock: timeline::Recorder,
}

impl Vm {
    /// Start QEMU for `cfg` with its files in `dir`.
    pub async fn start(cfg: &VmConfig, dir: &Path) -> Result<Self> {
        prepare_dir(cfg, dir).await?;
        let args = qemu_args(cfg, dir);
        std::fs::write(dir.join("qemu-cmdline.txt"), args.join(" "))?;
        let stderr = std::fs::File::create(dir.join("qemu-stderr.log"))?;
        let child = tokio::process::Command::new("qemu-system-x86_64")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        let started = Instant::now();
        let clock = timeline::Recorder::start(dir, started)?;
        let (qmp, events) = connect_qmp(dir).await?;
        Ok(Self {
            dir: dir.to_path_buf(),
            child,
            qmp,
            events,
            seen_events: Vec::new(),
            console_offset: 0,
            started,
            unfinished_startup: cfg.unfinished_startup,
            _clock: clock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The console captured so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("console.log")).unwrap_or_default())
            .into_owned()
    }

    /// The last `n` lines of the console, for error messages.
    pub fn console_tail(&self, n: usize) -> String {
        let c = self.console();
        let lines: Vec<&str> = c.lines().rev().take(n).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn drain_events(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen_events.push(e);
        }
    }

    /// Events received so far (JSON).
    pub fn events(&mut self) -> &[String] {
        self.drain_events();
        &self.seen_events
    }

    /// Poll `probe` until it yields a value. Fails fast when the console shows a fatal
    /// pattern (anywhere: a panic is fatal whenever it happened), when QEMU exits, or at the
    /// deadline; every failure carries the console tail.
    async fn wait_until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = probe(self) {
                return Ok(v);
            }
            let console = strip_ansi(&self.console());
            if let Some(fatal) = FATAL_CONSOLE_PATTERNS.iter().find(|f| console.contains(*f)) {
                bail!(
                    "boot failed: console shows {fatal:?}\n--- console tail ---\n{}",
                    self.console_tail(40)
                );
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "QEMU exited ({status}) while waiting for {what}\n--- console tail ---\n{}",
                    self.console_tail(40)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {}s waiting for {what}\n--- console tail ---\n{}",
                    timeout.as_secs(),
                    self.console_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Wait until the console (after what earlier waits consumed) contains `pattern`.
    pub async fn wait_for_console(&mut self, pattern: &str, timeout: Duration) -> Result<()> {
        let what = format!("{pattern:?} on the console");
        self.wait_until(&what, timeout, |vm| {
            let console = vm.console();
            let pos = console.get(vm.console_offset..)?.find(pattern)?;
            vm.console_offset += pos + pattern.len();
            Some(())
        })
        .await
    }

    /// Wait until the results port has received a line starting with `marker`; returns what
    /// the guest wrote up to and including that line. Every boot whose job wrote part of it
    /// (`IMGMODE-BOOT <id>`) must have reported `running` (see [`HealthReport`]), and so must
    /// every other boot that reported; otherwise this fails with the failed units.
    pub async fn wait_for_result(&mut self, marker: &str, timeout: Duration) -> Result<String> {
        let path = self.dir.join("results.log");
        let what = format!("the guest to report {marker:?}");
        let text = self
            .wait_until(&what, timeout, |_| {
                let text =
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
                let marker_at = text.lines().position(|l| l.starts_with(marker));
                let failed_at = text.lines().position(|l| l.starts_with(SCRIPT_FAILED));
                if let Some(f) = failed_at.filter(|f| marker_at.is_none_or(|m| *f < m)) {
                    let failed = text.lines().nth(f).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Some(Err(anyhow!(
                        "a guest script ended early ({failed}) before reporting {marker:?}; \
                         its last lines:\n{}",
                        tail.join("\n")
                    )));
                }
                let pos = marker_at?;
                Some(Ok(text
                    .lines()
                    .take(pos + 1)
                    .collect::<Vec<_>>()
                    .join("\n")))
            })
            .await??;
        let boots: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("IMGMODE-BOOT "))
            .map(|b| b.trim().to_string())
            .collect();
        for boot in boots {
            // the job started after its boot's report: it is there, or arrives at once
            let report = self
                .wait_until(
                    &format!("boot {boot}'s health report"),
                    Duration::from_secs(30),
                    |vm| vm.health().into_iter().find(|r| r.boot_id == boot),
                )
                .await?;
            report.judge(self.unfinished_startup)?;
        }
        self.judge_health()?;
        Ok(text)
    }

    /// The health reports of every boot so far (`health.log`).
    pub fn health(&self) -> Vec<HealthReport> {
        parse_health(&String::from_utf8_lossy(
            &std::fs::read(self.dir.join("health.log")).unwrap_or_default(),
        ))
    }

    /// Every boot that reported must have reached `running`.
    fn judge_health(&self) -> Result<()> {
        for r in self.health() {
            r.judge(self.unfinished_startup)?;
        }
        Ok(())
    }

    /// Plug `file` in as a read-only SCSI CD-ROM while the guest runs, as a user attaching an
    /// ISO would: the guest's kernel sees a new device (udev's `add`). The VM needs the
    /// controller [`SCSI_CONTROLLER`] adds; `id` names the drive.
    pub async fn attach_cdrom(&self, file: &Path, id: &str) -> Result<()> {
        ensure!(
            !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()),
            "a drive ID of letters and digits, not {id:?}"
        );
        ensure!(
            !file.display().to_string().contains(','),
            "{}: QEMU's option syntax cannot take a comma in a file name",
            file.display()
        );
        for cmd in [
            format!(
                "drive_add 0 if=none,id={id},file={},format=raw,media=cdrom,readonly=on",
                file.display()
            ),
            format!("device_add scsi-cd,drive={id},id={id}dev,bus=scsi0.0"),
        ] {
            let out = self
                .qmp
                .execute(qmp::human_monitor_command {
                    command_line: cmd.clone(),
                    cpu_index: None,
                })
                .await
                .map_err(|e| anyhow!("QMP human-monitor-command {cmd:?}: {e}"))?;
            // drive_add answers "OK"; device_add nothing; an error is text
            ensure!(
                out.trim().is_empty() || out.trim() == "OK",
                "QEMU refused {cmd:?}: {}",
                out.trim()
            );
        }
        Ok(())
    }

    /// `query-status`: the run state (`running`, `shutdown`, ...).
    pub async fn query_status(&self) -> Result<String> {
        let st = self
            .qmp
            .execute(qmp::query_status {})
            .await
            .map_err(|e| anyhow!("QMP query-status: {e}"))?;
        Ok(format!("{:?}", st.status).to_lowercase())
    }

    /// ACPI power button (`system_powerdown`).
    pub async fn powerdown(&self) -> Result<()> {
        self.qmp
            .execute(qmp::system_powerdown {})
            .await
            .map_err(|e| anyhow!("QMP system_powerdown: {e}"))?;
        Ok(())
    }

    /// Hard reset (`system_reset`), as a power cut would.
    pub async fn reset(&self) -> Result<()> {
        self.qmp
            .execute(qmp::system_reset {})
            .await
            .map_err(|e| anyhow!("QMP system_reset: {e}"))?;
        Ok(())
    }

    /// Stop QEMU at once (`quit`).
    pub async fn quit(mut self) -> Result<()> {
        let _ = self.qmp.execute(qmp::quit {}).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.start_kill();
        Ok(())
    }

    /// Wait for QEMU to exit after a guest shutdown; require a clean exit and a SHUTDOWN event.
    pub async fn wait_shutdown(mut self, timeout: Duration) -> Result<Vec<String>> {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(s) => s?,
            Err(_) => {
                let tail = self.console_tail(30);
                let _ = self.child.start_kill();
                bail!(
                    "the guest did not power off within {}s\n--- console tail ---\n{tail}",
                    timeout.as_secs()
                );
            }
        };
        // give the event task a moment to forward the last events
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.drain_events();
        if !status.success() {
            bail!("QEMU exited with {status} after shutdown");
        }
        if !self.seen_events.iter().any(|e| e.contains("SHUTDOWN")) {
            bail!(
                "QEMU exited without a SHUTDOWN event (events: {:?})",
                self.seen_events
            );
        }
        self.judge_health()?;
        Ok(self.seen_events)
    }
}

/// Clear what an earlier VM left in `dir`, and create the qcow2 overlay over `cfg`'s disk (and,
/// for OVMF, the copy of the variable store).
async fn prepare_dir(cfg: &VmConfig, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for f in [
        "console.log",
        "results.log",
        "health.log",
        "qmp-events.jsonl",
        "overlay.qcow2",
        "qmp.sock",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let disk = std::fs::canonicalize(&cfg.disk)
        .with_context(|| format!("disk image {} not found", cfg.disk.display()))?;
    let mut info = tokio::process::Command::new("qemu-img");
    info.args(["info", "--output=json"]);
    if let Some(f) = cfg.disk_format {
        info.args(["-f", f]);
    }
    let info = info
        .arg(&disk)
        .output()
        .await
        .context("running qemu-img (apt-get install qemu-utils)")?;
    let info: serde_json::Value = serde_json::from_slice(&info.stdout)
        .with_context(|| format!("qemu-img info {}", disk.display()))?;
    let backing_format = info["format"].as_str().unwrap_or("raw").to_string();
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", &backing_format, "-b"])
        .arg(&disk)
        .arg(dir.join("overlay.qcow2"))
        .output()
        .await
        .context("running qemu-img (apt-get install qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "creating the disk overlay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if matches!(cfg.boot, Boot::Uefi) {
        std::fs::copy(OVMF_VARS, dir.join("OVMF_VARS.fd"))
            .with_context(|| format!("copying {OVMF_VARS} (apt-get install ovmf)"))?;
    }
    Ok(())
}

/// Connect to QEMU's QMP socket in `dir` (it may take a moment to come up) and forward every
/// event to `qmp-events.jsonl` and to the returned channel.
async fn connect_qmp(dir: &Path) -> Result<(Qmp, mpsc::UnboundedReceiver<String>)> {
    let sock = dir.join("qmp.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match QmpStreamTokio::open_uds(&sock).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => {
                bail!(
                    "QMP socket {} did not come up: {e}; see qemu-stderr.log",
                    sock.display()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let stream = stream
        .negotiate()
        .await
        .context("QMP capabilities negotiation")?;
    let (qmp, mut ev) = stream.into_parts();
    let (tx, events) = mpsc::unbounded_channel();
    let log = dir.join("qmp-events.jsonl");
    tokio::spawn(async move {
        let mut f = match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .await
        {
            Ok(f) => f,
            Err(_) => return,
        };
        while let Some(Ok(event)) = ev.next().await {
            let line = serde_json::to_string(&event).unwrap_or_else(|_| format!("{event:?}"));
            let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            let _ = f.flush().await;
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((qmp, events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::health::health_script;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn failed_units_are_seen_through_the_consoles_colours() {
        let line = "[\x1b[0;1;31mFAILED\x1b[0m] Failed to start \x1b[0;1;39mimgmode-vmtest-liv\u{2026}\x1b[0me vmtest: the live system's checks.";
        let plain = strip_ansi(line);
        assert_eq!(
            plain,
            "[FAILED] Failed to start imgmode-vmtest-liv\u{2026}e vmtest: the live system's checks."
        );
        assert!(FATAL_CONSOLE_PATTERNS.iter().any(|f| plain.contains(f)));
    }

    #[test]
    fn every_vm_gets_the_health_unit_and_jobs_wait_for_it() {
        let cfg = VmConfig::new("/d.qcow2", Boot::Bios).job_unit("j.service", "[Service]\n");
        let a = qemu_args(&cfg, Path::new("/s")).join(" ");
        assert!(a.contains(&format!("name={HEALTH_PORT}")));
        assert!(a.contains("file,id=health,path=/s/health.log"));
        for cred in [
            "systemd.extra-unit.imgmode-vmtest-health.service=",
            "systemd.unit-dropin.multi-user.target~imgmode-vmtest-health=",
            "systemd.extra-unit.imgmode-vmtest-jobs.target=",
            "systemd.unit-dropin.imgmode-vmtest-jobs.target~j.service=",
            "systemd.unit-dropin.j.service~imgmode-vmtest-boot=",
            "vmtest.health=",
        ] {
            assert!(a.contains(cred), "{cred} missing");
        }
        assert!(health_script().contains("systemctl is-system-running --wait"));
        assert!(health_script().ends_with(&format!("systemctl start --no-block {JOBS_TARGET}\n")));
    }

    #[test]
    fn command_line_has_tcg_qmp_console_and_credentials() {
        let cfg = VmConfig::new("/d.qcow2", Boot::Uefi)
            .extra_unit("a.service", "[Service]\nExecStart=/bin/true\n");
        let a = qemu_args(&cfg, Path::new("/s"));
        let s = a.join(" ");
        assert!(s.contains("-accel tcg -cpu max,svm=off,vmx=off,erms=off,fsrm=off"));
        assert!(s.contains("-qmp unix:/s/qmp.sock,server=on,wait=off"));
        assert!(s.contains("file,id=console,path=/s/console.log"));
        assert!(s.contains(&format!("name={RESULTS_PORT}")));
        assert!(s.contains("if=pflash,format=raw,unit=1,file=/s/OVMF_VARS.fd"));
        assert!(s.contains("io.systemd.credential.binary:systemd.extra-unit.a.service="));
        assert!(
            !s.contains("-kernel"),
            "firmware boot must not pass a kernel"
        );
        let direct = VmConfig::new(
            "/d.qcow2",
            Boot::Direct {
                kernel: "/k".into(),
                initrd: "/i".into(),
                append: "root=x".into(),
            },
        );
        let s = qemu_args(&direct, Path::new("/s")).join(" ");
        assert!(s.contains("-kernel /k -initrd /i -append root=x"));
        // QEMU's kernel loader takes bootindex 0; the disk must not ask for it too
        assert!(!s.contains("bootindex=0"), "{s}");
    }
}

//! Running the system tools imgmode drives (mmdebstrap, ostree, sgdisk, mkfs, qemu-img ...).
//!
//! Every external program is named once in [`TOOLS`] together with the Debian package that
//! ships it, so a missing tool is reported as "install the Debian package X", never as a bare
//! "No such file or directory".

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Programs imgmode runs, and the Debian package that provides each.
pub const TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("ostree", "ostree"),
    ("skopeo", "skopeo"),
    ("sgdisk", "gdisk"),
    ("mkfs.ext4", "e2fsprogs"),
    ("mkfs.xfs", "xfsprogs"),
    ("mkfs.vfat", "dosfstools"),
    ("mkfs.erofs", "erofs-utils"),
    ("mmd", "mtools"),
    ("mcopy", "mtools"),
    ("qemu-img", "qemu-utils"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("xorriso", "xorriso"),
    ("podman", "podman"),
    ("buildah", "buildah"),
    ("losetup", "mount"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("e2fsck", "e2fsprogs"),
    ("resize2fs", "e2fsprogs"),
    ("xfs_growfs", "xfsprogs"),
    ("wipefs", "util-linux"),
    ("setpriv", "util-linux"),
    ("sfdisk", "fdisk"),
    ("ss", "iproute2"),
    ("openssl", "openssl"),
    ("etcd", "etcd-server"),
    ("docker-registry", "docker-registry"),
    ("zstd", "zstd"),
    ("debugfs", "e2fsprogs"),
    ("tar", "tar"),
    ("gzip", "gzip"),
    ("du", "coreutils"),
    ("cp", "coreutils"),
    ("sync", "coreutils"),
    ("chroot", "coreutils"),
    ("true", "coreutils"),
    ("sh", "dash"),
    ("hostname", "hostname"),
    ("ip", "iproute2"),
    ("findmnt", "util-linux"),
    ("lsblk", "util-linux"),
    ("mountpoint", "util-linux"),
    ("partx", "util-linux"),
    ("systemctl", "systemd"),
    ("networkctl", "systemd"),
    ("ssh-keygen", "openssh-client"),
    ("update-ca-certificates", "ca-certificates"),
    ("bwrap", "bubblewrap"),
    ("unshare", "util-linux"),
];

/// The Debian package that ships `tool`, if imgmode knows it.
pub fn package_for(tool: &str) -> Option<&'static str> {
    TOOLS.iter().find(|(t, _)| *t == tool).map(|(_, p)| *p)
}

/// Find `tool` on `PATH` (and the sbin directories, which a non-login root shell may lack).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Fail with an install hint unless every tool is present.
pub fn require_tools(tools: &[&str]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing
        .iter()
        .map(|t| package_for(t).unwrap_or(t))
        .collect();
    pkgs.sort();
    pkgs.dedup();
    bail!(
        "missing system tool{} {}; install {} with: apt-get install {}",
        if missing.len() > 1 { "s" } else { "" },
        missing.join(", "),
        if pkgs.len() > 1 {
            "the Debian packages"
        } else {
            "the Debian package"
        },
        pkgs.join(" ")
    )
}

/// Fail unless running as root; `why` says what needs it.
pub fn require_root(why: &str) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        bail!("{why} needs root; run it again as root (for example with sudo)")
    }
}

/// A command to run, with its arguments shown in errors.
pub struct Run {
    cmd: Command,
    display: String,
}

impl Run {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Self {
            display: program.to_string_lossy().into_owned(),
            cmd: Command::new(program),
        }
    }

    /// `program` from an image (someone else's code) confined with bubblewrap: the whole
    /// file system read-only, `writable` directories the only places it may write, a fresh
    /// `/dev`, `/proc`, `/tmp` and `/run` (no host socket reachable; `readable` directories are
    /// bound back, read-only, for inputs that live under `/run`), no network and no other namespaces shared, every
    /// capability dropped, its own session, killed with imgmode. With `remount_root` (a root
    /// that is the initial ramfs, as in a live system: `host::root_is_initramfs`), where the
    /// kernel refuses bwrap's `pivot_root`, the root is first made a mount of its own in a
    /// private mount namespace.
    pub fn sandboxed(
        program: impl AsRef<OsStr>,
        readable: &[&Path],
        writable: &[&Path],
        remount_root: bool,
    ) -> Self {
        const BWRAP: &[&str] = &[
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            // the host's sockets (systemd's private one, D-Bus) live here: a program with uid
            // 0 that could connect to them could ask systemd to run anything outside
            "--tmpfs",
            "/run",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--cap-drop",
            "ALL",
            "--new-session",
            "--die-with-parent",
        ];
        // the root bound recursively onto a directory of itself, moved over `/` and entered:
        // the same tree, now a mount that can be pivoted (only in this namespace)
        const REMOUNT: &str = "set -e; r=/run/imgmode-sandbox-root; mkdir -p \"$r\"; mount --rbind / \"$r\"; cd \"$r\"; mount --move . /; exec chroot . \"$@\"";
        let mut r = if remount_root {
            Run::new("unshare")
                .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .args([REMOUNT, "sh", "bwrap"])
        } else {
            Run::new("bwrap")
        }
        .args(BWRAP);
        // what the program reads that may live under the hidden /run (a live installer mounts
        // its target there), then what it may write
        for p in readable {
            r = r.arg("--ro-bind").arg(p).arg(p);
        }
        for w in writable {
            r = r.arg("--bind").arg(w).arg(w);
        }
        r.arg("--").arg(program)
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        let a = a.as_ref();
        self.display.push(' ');
        self.display.push_str(&a.to_string_lossy());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn current_dir(mut self, d: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(d);
        self
    }

    fn spawn_error(&self, e: std::io::Error) -> anyhow::Error {
        let program = self.cmd.get_program().to_string_lossy().into_owned();
        if e.kind() == std::io::ErrorKind::NotFound {
            match package_for(&program) {
                Some(pkg) => anyhow::anyhow!(
                    "missing system tool {program}; install the Debian package with: apt-get install {pkg}"
                ),
                None => anyhow::anyhow!("missing program {program}: {e}"),
            }
        } else {
            anyhow::anyhow!("starting {}: {e}", self.display)
        }
    }

    /// Send the child's stdout to our stderr (progress from tools whose output is not ours
    /// to print on stdout, which carries imgmode's own results).
    pub fn stdout_to_stderr(mut self) -> Self {
        self.cmd.stdout(std::io::stderr());
        self
    }

    /// Run, letting the child inherit stdout and stderr; fail on a non-zero exit.
    pub fn run(mut self) -> Result<()> {
        tracing::debug!("running {}", self.display);
        let status = self.cmd.status().map_err(|e| self.spawn_error(e))?;
        if !status.success() {
            bail!("{} failed ({status})", self.display);
        }
        Ok(())
    }

    /// Run with output captured; fail with the tail of stderr on a non-zero exit.
    pub fn output(mut self) -> Result<Output> {
        tracing::debug!("running {}", self.display);
        let out = self
            .cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} failed ({}):\n{}",
                self.display,
                out.status,
                tail.join("\n")
            );
        }
        Ok(out)
    }

    /// Run quietly: did it exit 0? (A program that cannot start counts as failing.)
    pub fn succeeds(mut self) -> bool {
        tracing::debug!("running {}", self.display);
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The command, for callers that wire its standard streams themselves (pipes between
    /// tools, long-running children); spawn it with [`Run::spawn_error_of`] for the message.
    pub fn into_command(self) -> (Command, String) {
        (self.cmd, self.display)
    }

    /// The message for a failed spawn of `program`: a missing tool names its Debian package.
    pub fn spawn_error_of(program: &str, e: std::io::Error) -> anyhow::Error {
        Run::new(program).spawn_error(e)
    }

    /// Run quietly and return stdout as a string.
    pub fn read(self) -> Result<String> {
        let display = self.display.clone();
        let out = self.output()?;
        String::from_utf8(out.stdout).with_context(|| format!("output of {display} is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let err = require_tools(&["sgdisk-does-not-exist", "true"]).unwrap_err();
        assert!(
            err.to_string().contains(
                "missing system tool sgdisk-does-not-exist; install the Debian package with: apt-get install sgdisk-does-not-exist"
            ),
            "{err}"
        );
        let err = Run::new("qemu-img-not-here").run().unwrap_err();
        assert!(err.to_string().contains("missing program"), "{err}");
    }

    #[test]
    fn known_tools_map_to_packages() {
        assert_eq!(package_for("sgdisk"), Some("gdisk"));
        assert_eq!(package_for("mcopy"), Some("mtools"));
        assert_eq!(package_for("nope"), None);
    }

    /// The sandbox, both ways in (directly, and with the root made a mount first as on a live
    /// system): the program writes its writable directory and nothing else, sees no network
    /// but loopback, and holds no capability.
    #[test]
    fn a_sandboxed_program_writes_only_where_it_may_and_has_no_network() {
        imgmode_testkit::require!(
            imgmode_testkit::Need::Root,
            imgmode_testkit::Need::Tool("bwrap"),
            imgmode_testkit::Need::Tool("unshare")
        );
        let td = tempfile::tempdir().unwrap();
        let (out, other) = (td.path().join("out"), td.path().join("other"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        // an input under /run, as a live installer's target is
        let input = tempfile::tempdir_in("/run").unwrap();
        std::fs::write(input.path().join("in"), "input\n").unwrap();
        for remount in [false, true] {
            let script = format!(
                "echo ok > {o}/made; if echo x > {x}/escaped 2>/dev/null; then echo WROTE-OUTSIDE; fi; \
                 grep -c : /proc/net/dev; grep CapEff /proc/self/status; \
                 if [ -e /run/systemd ]; then echo HOST-RUN; fi; cat {i}/in",
                o = out.display(),
                x = other.display(),
                i = input.path().display()
            );
            let r = Run::sandboxed("/bin/sh", &[input.path()], &[&out], remount)
                .args(["-c", &script])
                .output()
                .unwrap_or_else(|e| panic!("remount {remount}: {e:#}"));
            let said = String::from_utf8_lossy(&r.stdout);
            assert!(!said.contains("WROTE-OUTSIDE"), "remount {remount}: {said}");
            assert!(
                !said.contains("HOST-RUN"),
                "remount {remount}: /run is the host's"
            );
            assert!(said.contains("input"), "remount {remount}: {said}");
            let mut lines = said.lines();
            assert_eq!(
                lines.next(),
                Some("1"),
                "remount {remount}: only lo: {said}"
            );
            assert_eq!(
                lines.next().map(|l| l.split_whitespace().last()),
                Some(Some("0000000000000000")),
                "remount {remount}: {said}"
            );
            assert_eq!(std::fs::read_to_string(out.join("made")).unwrap(), "ok\n");
            assert!(!other.join("escaped").exists());
            std::fs::remove_file(out.join("made")).unwrap();
        }
    }

    #[test]
    fn failing_command_reports_stderr() {
        let err = Run::new("sh")
            .args(["-c", "echo boom >&2; exit 3"])
            .output()
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("boom") && msg.contains("exit status: 3"),
            "{msg}"
        );
    }
}

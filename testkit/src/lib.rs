//! Test support and fixtures, for tests and the hidden `imgmode internal` verbs only.
//!
//! - [`cluster`]: the test cluster, a stand-in for a single-node control plane.
//! - [`pki`]: an OpenShift-shaped PKI for tests, benchmarks and the test cluster.
//! - [`guide`]: the user guides' command blocks, which tests and VM scenarios run.
//! - [`require!`]: one place that decides whether a test can run on this machine.
//!
//! A test names what it needs ([`Need`]) with [`require!`]. When everything is there the test
//! runs. When something is missing:
//!
//! - with `IMGMODE_TEST_STRICT=1` (set by `cargo xtask ci`, and so by `.ci/run`) the test
//!   fails and names what is missing and how to get it;
//! - otherwise the test is skipped, visibly: the reason goes to stderr and one line to
//!   `target/test-skips.txt`, which `cargo xtask test` and `cargo xtask ci` count and list at
//!   the end of the run.
//!
//! Tools are searched the way the product searches them (`imgmode_support::cmd::which`: `PATH`
//! plus the sbin directories), so a test never skips for a tool the product would find.
//!
//! Invariant: no test returns early on its own; every skip goes through [`require!`].

pub mod cluster;
pub mod guide;
pub mod pki;

use std::io::Write;
use std::path::PathBuf;

/// The environment variable that turns a missing precondition into a failure.
pub const STRICT_ENV: &str = "IMGMODE_TEST_STRICT";
/// The file under the target directory that lists the tests skipped by this build's runs.
pub const SKIPS_FILE: &str = "test-skips.txt";

/// Something a test needs from the machine it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Running as root (owners, mounts, loop devices, disks).
    Root,
    /// A program, found as imgmode finds it.
    Tool(&'static str),
    /// A free loop device (`losetup --find`), which needs root.
    LoopDevice,
    /// Mounting a tmpfs (root, and a kernel and sandbox that allow it).
    Tmpfs,
    /// Nothing listens on this TCP port (it is bound for a moment to check).
    FreePort(u16),
    /// This machine is not an ostree-booted system (`/run/ostree-booted` is absent).
    NotOstreeBooted,
}

impl Need {
    /// `None` when the need is met, otherwise what is missing and how to get it.
    pub fn missing(&self) -> Option<String> {
        match *self {
            Need::Root => (!is_root()).then(|| "root (run the tests as root)".to_string()),
            Need::Tool(t) => imgmode_support::cmd::which(t).is_none().then(|| {
                let pkg = imgmode_support::cmd::package_for(t).unwrap_or(t);
                format!("the tool {t} (Debian package {pkg}; cargo xtask deps installs it)")
            }),
            Need::LoopDevice => loop_device_missing(),
            Need::Tmpfs => tmpfs_missing(),
            Need::FreePort(p) => std::net::TcpListener::bind(("0.0.0.0", p))
                .is_err()
                .then(|| {
                    format!("TCP port {p} free (something listens on it: ss -ltnp sport = :{p})")
                }),
            Need::NotOstreeBooted => {
                std::path::Path::new("/run/ostree-booted")
                    .exists()
                    .then(|| {
                        "a machine that is not ostree-booted (/run/ostree-booted exists)"
                            .to_string()
                    })
            }
        }
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn loop_device_missing() -> Option<String> {
    if !is_root() {
        return Some("a loop device (needs root)".into());
    }
    let Some(losetup) = imgmode_support::cmd::which("losetup") else {
        return Need::Tool("losetup").missing();
    };
    let out = std::process::Command::new(losetup).arg("--find").output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "a free loop device (losetup --find: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("a free loop device (losetup: {e})")),
    }
}

fn tmpfs_missing() -> Option<String> {
    if !is_root() {
        return Some("mounting a tmpfs (needs root)".into());
    }
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return Some(format!("a temporary directory for a tmpfs mount: {e}")),
    };
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .output();
    match mount {
        Ok(o) if o.status.success() => {
            let _ = std::process::Command::new("umount")
                .arg(dir.path())
                .status();
            None
        }
        Ok(o) => Some(format!(
            "mounting a tmpfs (mount: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("mounting a tmpfs (mount: {e})")),
    }
}

/// Is strict mode on (`IMGMODE_TEST_STRICT=1`)?
pub fn strict() -> bool {
    std::env::var(STRICT_ENV).is_ok_and(|v| v == "1")
}

/// The running test's name: libtest names the thread after it.
fn test_name(module: &str) -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => format!("{module}: {n}"),
        _ => module.to_string(),
    }
}

/// `target/` of the build that made the running test binary (`target/<profile>/deps/<bin>`).
pub fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().nth(3).map(PathBuf::from)
}

/// Whether the test in `module` can run with `needs`. Used through [`require!`]: it fails the
/// test in strict mode, and records a visible skip otherwise.
pub fn can_run(module: &str, needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(Need::missing).collect();
    if missing.is_empty() {
        return true;
    }
    let test = test_name(module);
    let what = missing.join("; ");
    if strict() {
        panic!("{test} cannot run here: it needs {what}. {STRICT_ENV}=1 makes this a failure; unset it to skip instead");
    }
    eprintln!("SKIPPED {test}: needs {what}");
    if let Some(t) = target_dir() {
        let line = format!("{test}: needs {what}\n");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(t.join(SKIPS_FILE))
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
    false
}

/// Run the rest of the test only when the machine has what it needs: in strict mode a missing
/// need fails the test; otherwise the skip is printed and recorded (see the crate docs).
///
/// ```text
/// imgmode_testkit::require!(Need::Root, Need::Tool("skopeo"));
/// imgmode_testkit::require!(all INSTALL_NEEDS); // a `[Need; N]` shared by several tests
/// ```
#[macro_export]
macro_rules! require {
    (all $needs:expr) => {
        if !$crate::can_run(module_path!(), &$needs) {
            return;
        }
    };
    ($($need:expr),+ $(,)?) => {
        if !$crate::can_run(module_path!(), &[$($need),+]) {
            return;
        }
    };
}

/// A throwaway etcd (Debian package etcd-server) on two free loopback ports, with its data in
/// a temporary directory; killed when dropped. Tests that need [`Need::Tool`]`("etcd")` start
/// one.
pub struct TestEtcd {
    child: std::process::Child,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP port nothing listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl TestEtcd {
    /// Start it and wait (up to 30 s) until it answers; panics with its log's path otherwise.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Serving HTTPS with `server` (its CA, certificate and key) and requiring client
    /// certificates under that CA, as a real cluster's etcd does; waits until a client with
    /// `client` gets answers.
    pub fn start_tls(
        server: &imgmode_recert::etcd::ClientTls,
        client: &imgmode_recert::etcd::ClientTls,
    ) -> Self {
        Self::start_with(Some((server, client)))
    }

    fn start_with(
        tls: Option<(
            &imgmode_recert::etcd::ClientTls,
            &imgmode_recert::etcd::ClientTls,
        )>,
    ) -> Self {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (c, p) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{c}");
        let peer = format!("http://127.0.0.1:{p}");
        let log = dir.path().join("etcd.log");
        let mut cmd = std::process::Command::new("etcd");
        cmd.args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")]);
        if let Some((server, _)) = tls {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&server.ca)
                .arg("--cert-file")
                .arg(&server.cert)
                .arg("--key-file")
                .arg(&server.key);
        }
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("etcd's log"))
            .spawn()
            .expect("etcd (Debian package etcd-server) must be installed: cargo xtask deps");
        let etcd = TestEtcd {
            child,
            endpoint,
            dir,
        };
        let client = tls.map(|(_, c)| c);
        let deadline = Instant::now() + Duration::from_secs(30);
        while imgmode_support::runtime::block_on(async {
            imgmode_recert::etcd::Etcd::connect_with(&etcd.endpoint, client)
                .await
                .is_err()
        })
        .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "etcd did not start; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        etcd
    }

    /// Its data directory (`member/snap/db` is the database file, `member/wal/` the log).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_that_is_nowhere_is_named_with_its_package() {
        let m = Need::Tool("imgmode-no-such-tool").missing().unwrap();
        assert!(m.contains("imgmode-no-such-tool"), "{m}");
        assert!(Need::Tool("sh").missing().is_none());
    }

    /// `cargo xtask test` (which cannot link this crate) uses the same names.
    #[test]
    fn xtask_agrees_on_the_strict_variable_and_the_skip_list() {
        let xtask = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/src/main.rs"),
        )
        .unwrap();
        assert!(xtask.contains(&format!("const STRICT_ENV: &str = \"{STRICT_ENV}\";")));
        assert!(xtask.contains(&format!("const SKIPS_FILE: &str = \"{SKIPS_FILE}\";")));
    }

    #[test]
    fn a_taken_port_is_missing() {
        let l = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(Need::FreePort(port)
            .missing()
            .unwrap()
            .contains(&port.to_string()));
    }
}

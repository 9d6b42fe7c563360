//! A throwaway distribution registry (Debian's `docker-registry`) on the host's loopback.
//! Guests reach it through QEMU user networking as `10.0.2.2:PORT`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The address guests use for the host's loopback under QEMU user networking.
pub const GUEST_HOST_ADDR: &str = "10.0.2.2";

pub struct Registry {
    pub port: u16,
    /// With TLS: the CA (PEM) that signed the registry's certificate (for 127.0.0.1, 10.0.2.2
    /// and the private network's host address), and a directory holding it as `ca.crt` (skopeo's `--dest-cert-dir`).
    pub tls: Option<(String, PathBuf)>,
    child: std::process::Child,
}

impl Registry {
    /// Start a plain-HTTP registry storing under `dir`; waits until `/v2/` answers.
    pub fn start(dir: &Path) -> Result<Self> {
        Self::start_with(dir, false)
    }

    /// Start a registry serving TLS with a throwaway CA.
    pub fn start_tls(dir: &Path) -> Result<Self> {
        Self::start_with(dir, true)
    }

    fn start_with(dir: &Path, tls: bool) -> Result<Self> {
        std::fs::create_dir_all(dir.join("storage"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = dir.join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        );
        let tls = if tls {
            let (cert, key, ca) = make_certs(&dir.join("tls"))?;
            text.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            let certs = dir.join("tls/certs.d");
            std::fs::create_dir_all(&certs)?;
            std::fs::copy(&ca, certs.join("ca.crt"))?;
            Some((std::fs::read_to_string(&ca)?, certs))
        } else {
            None
        };
        std::fs::write(&config, text)?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let mut reg = Registry { port, tls, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if reg.ping() {
                return Ok(reg);
            }
            if let Some(st) = reg.child.try_wait()? {
                bail!(
                    "docker-registry exited ({st}); see {}",
                    dir.join("registry.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not answer on 127.0.0.1:{port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `GET /v2/` answers 200 (with TLS: the port accepts connections).
    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls.is_some() {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.0 200")
            || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200")
    }

    /// `host:port` as the host names it.
    pub fn host_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `host:port` as a guest names it.
    pub fn guest_addr(&self) -> String {
        format!("{GUEST_HOST_ADDR}:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for the registry's two names (127.0.0.1 for the host,
/// 10.0.2.2 for guests), made with the openssl CLI: (certificate, key, CA certificate).
fn make_certs(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let p = |n: &str| dir.join(n);
    let ossl = |args: &[&str], what: &str| -> Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("running openssl (apt-get install openssl)")?;
        if !out.status.success() {
            bail!(
                "openssl ({what}) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    ossl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=imgmode vmtest registry CA",
        ],
        "the CA",
    )?;
    ossl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "registry.key",
            "-out",
            "registry.csr",
            "-subj",
            "/CN=imgmode vmtest registry",
        ],
        "the registry's key",
    )?;
    std::fs::write(
        p("ext.cnf"),
        format!(
            "subjectAltName=IP:127.0.0.1,IP:{GUEST_HOST_ADDR},IP:{}\nextendedKeyUsage=serverAuth\n",
            super::privnet::HOST_ADDR
        ),
    )?;
    ossl(
        &[
            "x509",
            "-req",
            "-in",
            "registry.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "registry.crt",
        ],
        "the registry's certificate",
    )?;
    Ok((p("registry.crt"), p("registry.key"), p("ca.crt")))
}

//! A throwaway distribution registry (Debian's `docker-registry`) on the host's loopback.
//! Guests reach it through QEMU user networking as `10.0.2.2:PORT`.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// The address guests use for the host's loopback under QEMU user networking.
pub const GUEST_HOST_ADDR: &str = "10.0.2.2";

pub struct Registry {
    pub port: u16,
    child: std::process::Child,
}

impl Registry {
    /// Start a registry storing under `dir`; waits until `/v2/` answers.
    pub fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("storage"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("storage").display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let mut reg = Registry { port, child };
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

    /// `GET /v2/` answers 200.
    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
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

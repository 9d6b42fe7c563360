//! A private network for a VM with no DHCP server on it: a host tap device holding
//! [`HOST_ADDR`], no NAT and nothing else on the link. A guest on it has the address it
//! configures itself or none, and reaches the host only (a service on the host's loopback is
//! forwarded to [`HOST_ADDR`] with [`PrivateNet::forward`]).

use anyhow::{bail, ensure, Context, Result};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The host's address on the private network (a /24).
pub const HOST_ADDR: &str = "10.77.0.1";
/// The network, as machineNetwork names it.
pub const CIDR: &str = "10.77.0.0/24";

pub struct PrivateNet {
    pub ifname: String,
    forwards: Vec<Forward>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("running ip (apt-get install iproute2)")?;
    ensure!(
        out.status.success(),
        "ip {} failed: {} (the private network needs root and /dev/net/tun)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl PrivateNet {
    /// Create the tap device (named after this process) with [`HOST_ADDR`]; refuses to start
    /// when something on the host serves DHCP, which would make the network not DHCP-less.
    pub fn create() -> Result<Self> {
        let ifname = format!("imgvm{}", std::process::id());
        // the devices of earlier runs that crashed go first: a second device with the host's
        // address would take the network's route
        let out = std::process::Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .context("running ip (apt-get install iproute2)")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or_default().trim();
            if name.starts_with("imgvm") {
                let _ = ip(&["link", "del", name]);
            }
        }
        ip(&["tuntap", "add", "dev", &ifname, "mode", "tap"])?;
        let net = PrivateNet {
            ifname,
            forwards: vec![],
        };
        ip(&[
            "addr",
            "add",
            &format!("{HOST_ADDR}/24"),
            "dev",
            &net.ifname,
        ])?;
        ip(&["link", "set", &net.ifname, "up"])?;
        // nothing may answer DHCP: no socket on the DHCP server port anywhere on the host
        let out = std::process::Command::new("ss")
            .args(["-H", "-uln", "sport = :67"])
            .output()
            .context("running ss (apt-get install iproute2)")?;
        let listening = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !listening.is_empty() {
            bail!("a DHCP server listens on this host ({listening}); the private network would not be DHCP-less");
        }
        Ok(net)
    }

    /// QEMU's arguments for a virtio NIC with `mac` on this network.
    pub fn qemu_args(&self, mac: &str) -> Vec<String> {
        vec![
            "-netdev".into(),
            format!(
                "tap,id=privnet,ifname={},script=no,downscript=no",
                self.ifname
            ),
            "-device".into(),
            format!("virtio-net-pci,netdev=privnet,mac={mac}"),
        ]
    }

    /// Serve `127.0.0.1:port` on `HOST_ADDR:port` for as long as the network lives.
    pub fn forward(&mut self, port: u16) -> Result<()> {
        let addr: Ipv4Addr = HOST_ADDR.parse()?;
        let listener = TcpListener::bind(SocketAddrV4::new(addr, port))
            .with_context(|| format!("listening on {HOST_ADDR}:{port}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(guest) = conn else { continue };
                let Ok(host) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (guest.try_clone(), host.try_clone()),
                    (host.try_clone(), guest.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        self.forwards.push(Forward { port, stop });
        Ok(())
    }
}

struct Forward {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        for f in &self.forwards {
            f.stop.store(true, Ordering::SeqCst);
            // wake the accept loop so that it sees the flag
            let _ = TcpStream::connect((HOST_ADDR, f.port));
        }
        let _ = ip(&["link", "del", &self.ifname]);
    }
}

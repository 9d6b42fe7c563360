//! The machinery the scenarios are made of; nothing here knows a scenario.
//!
//! - [`qemu`]: one VM under test (QEMU under TCG, QMP, serial console, results port, systemd
//!   credentials as SMBIOS strings); [`health`]: the health unit that judges every boot;
//!   [`direct`]: direct kernel boot from a disk's boot entry.
//! - [`guest`]: the guest job protocol (job units, the guest shell prelude, phase reports and
//!   their parsing, booting a VM with a job and waiting for its report).
//! - [`artifacts`]: the images built once per run by running `imgmode` like a user;
//!   [`layered_image`]: the layered image and the VM the layered-image scenarios boot it in;
//!   [`seed`]: the `build-seed` flow (seed-system disk, seed VM, the seed copied off its disk);
//!   [`context`]: the run's shared state ([`context::RunContext`]: artifacts, the seed made
//!   once per run); [`handoff`]: the shared images and the seed pushed to a registry or an
//!   OCI layout, and pulled by digest instead of built (`--artifacts-to/-from`).
//! - [`partitions`]: a raw disk image's partitions and read-only loop devices over them, read
//!   with `debugfs` and the filesystem checkers.
//! - [`media`]: payload disks, blank installation disks, ISOs as CD-ROMs; [`install_iso`]:
//!   what the installation-ISO scenarios share (the live system's checks, the seed in a TLS
//!   registry); [`registry`]: a throwaway `docker-registry` on the host's loopback;
//!   [`privnet`]: a private network with no DHCP server (a tap device), onto which a host
//!   service is forwarded;
//!   [`secrets`]: host-side checks of the installer's secret outputs.
//! - [`timeline`]: the console's lines on the host's clock, cut into phases (the benchmarks'
//!   per-phase tables and pictures).
//!
//! Dependencies point one way: `artifacts`, `health`, `partitions` and `privnet` use no other
//! module here; `direct` uses `partitions`;
//! `registry` uses `privnet` (its certificate names the private network's host address);
//! `media` and `secrets` use `artifacts`; `qemu` uses `health` and `timeline`; `direct` and `guest` use `qemu`;
//! `layered_image` and `seed` use `artifacts`, `guest` and `qemu`; `context` and `handoff` use
//! `artifacts` and `seed`; `install_iso` uses `context` and the rest.

pub mod artifacts;
pub mod context;
pub mod direct;
pub mod guest;
pub mod handoff;
pub mod health;
pub mod install_iso;
pub mod layered_image;
pub mod media;
pub mod partitions;
pub mod privnet;
pub mod qemu;
pub mod registry;
pub mod secrets;
pub mod seed;
pub mod timeline;

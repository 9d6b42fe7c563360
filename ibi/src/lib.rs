//! The image-based installer (lifecycle-agent's `ibi` and openshift-install's
//! `image-based` verbs): a seed made by `imgmode-seed` onto a blank disk.
//!
//! - [`config`]: the installer's `ImageBasedInstallationConfig`.
//! - [`install`]: `imgmode ibi install`: every check before the disk is touched, then the disk,
//!   the seed's deployment, its restore and precache, as named steps a state file records.
//! - [`installiso`]: `imgmode ibi create-image`, the installation ISO (a live ISO from
//!   `imgmode-os` with the config, its unit and optionally the seed and a payload).
//! - [`imageiso`]: `imgmode iso`, an unattended installer ISO for any bootable image (its disk
//!   image written by `imgmode-os`, carried on a live ISO), and `imgmode install-from-iso`,
//!   what its live system runs.
//! - [`configiso`]: `imgmode ibi create-config-image`, the configuration ISO carrying the
//!   SeedReconfiguration (`imgmode_seed::reconfig`) that post-pivot applies.
//! - [`payload`]: registry-less installs (the payload registry) and the host's payloads.
//! - [`pki`]: the installer's X.509 issuing (OpenSSL).
//! - `inroot`: every write into the installed root after the seed's tarballs, beneath a
//!   directory handle (a seed's symlink never leads it onto the installer's files).
//!
//! Invariant: depends on `imgmode-seed` (never the reverse) and on `imgmode-support`,
//! `imgmode-image`, `imgmode-os`; it never reads the environment.

pub mod config;
pub mod configiso;
pub mod imageiso;
mod inroot;
pub mod install;
pub mod installiso;
pub mod payload;
pub mod pki;

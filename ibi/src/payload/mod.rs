//! Registry-less installs and the host's payloads, in one place.
//!
//! - [`registry`]: the payload registry (docker-registry on port 22625, its TLS, htpasswd,
//!   `registries.conf` mirrors, its unit) as files for the live system and the installed one.
//! - [`store`]: the payloads a host holds (add, status, remove with the in-use check).
//! - [`serving`]: an installed host's registry as the cluster's: its certificate names the
//!   host's addresses and `api-int`, and a new node's installation config to install from it.
//! - [`peer`]: payloads copied between control-plane nodes through their registries
//!   (`payload pull`), each payload's record served as an image ([`record_image`]).
//! - [`optout`]: the host stops serving and importing payloads, its store deleted.
//! - [`release`]: the host's `InternalReleaseImage` record of them (Importing, Available,
//!   Degraded per release).
//!
//! The payload format itself (an `imgmode mirror` directory and its record) is
//! `imgmode_image::mirror`.

pub mod optout;
pub mod peer;
pub mod record_image;
pub mod registry;
pub mod release;
pub mod serving;
pub mod store;

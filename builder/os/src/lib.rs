//! The bootable operating system: ostree, the default base image, disks, GRUB, live ISOs, and
//! the node side of image mode.
//!
//! - [`ostree`]: libostree and ostree-ext: encapsulation, `imgmode status`.
//! - [`base`]: the default base image, built from Debian packages in two cached stages.
//! - [`partition`], [`disk`], [`grub`]: the GPT, a deployed sysroot written into it, GRUB for
//!   BIOS and UEFI from the image's own modules.
//! - [`live`]: live ISOs that unpack the image into RAM.
//! - [`node`]: switch, upgrade, rollback and kernel arguments on a booted (or offline) sysroot.
//!
//! Invariant: depends only on `imgmode-support` and `imgmode-image`; never boots a VM and never
//! reads ambient configuration (callers pass the store, cache directory and options).

pub mod base;
pub mod disk;
pub mod grub;
pub mod live;
mod liveroot;
pub mod node;
pub mod ostree;
pub mod partition;

/// ostree-ext's image proxy (`skopeo experimental-image-proxy`) under the same trust policy as
/// every other skopeo imgmode runs ([`imgmode_image::fetch::proxy_config`]).
pub(crate) fn proxy_config() -> ostree_ext::containers_image_proxy::ImageProxyConfig {
    imgmode_image::fetch::proxy_config(&Default::default())
}

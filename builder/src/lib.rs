//! imgmode's builder: the default base image, the local image store, image references, and
//! bootable disk images.
//!
//! Invariant: this crate never boots a VM (that is `imgmode-vmtest`) and never reads ambient
//! configuration on its own: callers pass the store, cache directory and options.

pub mod base;
pub mod cmd;
pub mod cpio;
pub mod digest;
pub mod disk;
pub mod extract;
pub mod grub;
pub mod imgref;
pub mod live;
pub mod mirror;
pub mod oci;
pub mod ostree;
pub mod partition;
pub mod payloads;
pub mod progress;
pub mod store;
pub mod tarstream;
pub mod workdir;

pub use progress::Steps;
pub use store::Store;

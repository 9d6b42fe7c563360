//! Container images, independent of what is inside them.
//!
//! - [`digest`]: digest strings checked before they become paths or URLs; verifying readers.
//! - [`imgref`]: image arguments (a local name or a transport reference).
//! - [`store`]: the local OCI store.
//! - [`oci`]: OCI layouts (written as canonical JSON, blobs hashed while written), any image
//!   argument opened as a layout, the fetch preflight, and the one `skopeo` wrapper.
//! - [`fetch`]: one layer streamed from wherever its image is (a layout in place, anything else
//!   through skopeo's image proxy), never staged on a disk.
//! - [`tarstream`] and [`extract`]: the strict tar reader and the one extractor every unpack
//!   goes through.
//! - [`cpio`]: `newc` archives for initramfs-style images.
//! - [`mirror`]: images into the distribution registry's filesystem layout.
//!
//! Invariant: nothing here knows about ostree deployments, disks or seeds; it depends only on
//! `imgmode-support`.

pub mod cpio;
pub mod digest;
pub mod extract;
pub mod fetch;
pub mod imgref;
pub mod mirror;
pub mod oci;
pub mod skopeo;
pub mod store;
pub mod tarstream;

pub use store::Store;

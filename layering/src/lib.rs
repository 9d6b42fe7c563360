//! Image mode for OpenShift-style layering.
//!
//! - [`build`]: `imgmode build`, Containerfiles built by podman and stored in the local store;
//! - [`lint`] over [`tree`]: `imgmode container lint`, bootc's lints by name;
//! - [`image`]: any image reference opened as an OCI layout for reading;
//! - [`objects`]: `MachineConfig` / `MachineOSConfig` / `MachineOSBuild` as cluster admins write
//!   them, and a MachineConfig applied to (or reverted on) a node through `imgmode_os::node`.
//!
//! It builds on `imgmode-image` (references, the local store) and `imgmode-os` (node updates).

pub mod build;
pub mod image;
pub mod lint;
pub mod machineos;
pub mod objects;
pub mod tree;

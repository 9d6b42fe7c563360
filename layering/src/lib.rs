//! Image mode for OpenShift-style layering.
//!
//! - [`build`]: `imgmode build`, Containerfiles built by podman and stored in the local store;
//! - [`lint`] over [`tree`]: `imgmode container lint`, bootc's lints by name;
//! - [`image`]: any image reference opened as an OCI layout for reading;
//! - [`node`]: the node side (`upgrade`, `switch`, `rollback`, `apply-machineconfig`,
//!   `revert`), staged through ostree-ext and libostree;
//! - [`objects`]: `MachineConfig` / `MachineOSConfig` / `MachineOSBuild` as cluster admins write
//!   them.
//!
//! It builds on `imgmode_builder` for image references, the local store and sysroot status.

pub mod build;
pub mod image;
pub mod lint;
pub mod machineos;
pub mod node;
pub mod objects;
pub mod tree;

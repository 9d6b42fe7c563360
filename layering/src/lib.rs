//! Image mode for OpenShift-style layering (issue: layered images).
//!
//! Will hold: `MachineOSConfig` / `MachineOSBuild` / `MachineConfig` objects read from the
//! YAML a cluster admin writes, Containerfile builds through buildah/podman with the base
//! image available to `FROM`, `imgmode container lint`, and the node side (`upgrade`,
//! `switch`, `rollback`, `apply-machineconfig`, `revert`) staged through ostree-ext.
//!
//! It builds on `imgmode_builder` for image references, the local store and sysroot status.

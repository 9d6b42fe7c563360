//! recert: regenerate every certificate, private key and JWT of a cluster copy and rename it,
//! so that no two hosts made from one seed share a secret.
//!
//! Will hold: the configuration (flags or `RECERT_CONFIG`, never both), the filesystem and etcd
//! scanners, the issuer graph and re-signing from the roots down, the rename and CN/SAN rules,
//! and the redacted summary file.

//! The leaf of the workspace: what every other imgmode crate needs and nothing image-specific.
//!
//! - [`cmd`]: the one runner of external tools (a missing tool names its Debian package).
//! - [`fs`]: atomic writes, scratch work directories, free space, writes at an offset.
//! - [`io`]: IO adapters (hashing and counting, a file's digest, read-ahead decompression).
//! - [`host`]: facts about this machine in the spellings images use.
//! - [`progress`]: the step printer every long verb reports through.
//! - [`runtime`]: the one tokio runtime the synchronous code blocks on.
//! - [`size`]: binary units, `10G`-style arguments, sizes for people.
//! - [`steplog`]: the one checkpoint / step log of every resumable or recorded flow.
//! - [`time`]: timestamps (RFC 3339, UTC).
//! - [`validate`]: the one validation layer for values users give (DNS names, IPs, CIDRs,
//!   UUIDs, label keys, file names, single-line text) and how a refusal shows the value.
//! - [`yaml`]: typed YAML input with file/line/column errors and kind/apiVersion checks.
//!
//! Invariant: this crate depends on no other imgmode crate.

pub mod cmd;
pub mod fs;
pub mod host;
pub mod io;
pub mod progress;
pub mod runtime;
pub mod size;
pub mod steplog;
pub mod time;
pub mod validate;
pub mod yaml;

pub use progress::Steps;

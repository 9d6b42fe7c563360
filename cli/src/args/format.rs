//! The value of `--format`: the global output format, or `imgmode disk`'s own disk format.

use crate::output::OutputFormat;
use clap::builder::{EnumValueParser, TypedValueParser};
use imgmode_os::disk::DiskFormat;

/// A `--format` value.
///
/// The global `--format` is the output format. `imgmode disk` has a `--format` of its own, the
/// disk image's, under the same argument id: clap propagates a global argument only into the
/// subcommands that have no argument of its id (so `disk` keeps its own), and it hands values
/// between the levels by id, so both arguments must parse into this one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatValue {
    /// How results are printed.
    Output(OutputFormat),
    /// `imgmode disk`'s disk image format.
    Disk(DiskFormat),
}

/// The global `--format`: human, json or yaml.
pub fn output_format() -> impl TypedValueParser<Value = FormatValue> {
    EnumValueParser::<OutputFormat>::new().map(FormatValue::Output)
}

/// `imgmode disk --format`: raw, qcow2, vmdk, vhd, ami or gce.
pub fn disk_format() -> impl TypedValueParser<Value = FormatValue> {
    EnumValueParser::<DiskFormat>::new().map(FormatValue::Disk)
}

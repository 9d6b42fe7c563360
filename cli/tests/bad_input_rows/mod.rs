//! The rows of the bad-input table, by area. Each function's body holds its rows' messages, so
//! docs/errors.md can name it as the test of a class.

use super::{row, Row};

mod configs;
mod images;
mod layering;
mod payload;
mod recert;
mod usage;

/// Every row.
pub fn all_rows() -> Vec<Row> {
    let mut v = vec![];
    v.extend(images::image_reference_rows());
    v.extend(images::typed_reference_rows());
    v.extend(images::image_content_rows());
    v.extend(images::seed_image_rows());
    v.extend(configs::installation_config_rows());
    v.extend(configs::configuration_iso_rows());
    v.extend(configs::network_config_rows());
    v.extend(recert::recert_rows());
    v.extend(payload::payload_rows());
    v.extend(payload::mirror_rows());
    v.extend(layering::layer_and_node_rows());
    v.extend(usage::usage_rows());
    v
}

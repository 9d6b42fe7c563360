//! Timestamps as imgmode prints and records them (UTC, RFC 3339 to the second), through the
//! `humantime` crate.

use std::time::SystemTime;

/// `2023-11-14T22:13:20Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `202311142213` (YYYYMMDDHHMM, UTC), for version strings.
pub fn compact(t: SystemTime) -> String {
    rfc3339(t)
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(12)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(compact(t), "202311142213");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}

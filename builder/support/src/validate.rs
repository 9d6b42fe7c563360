//! The one validation layer for values a user gives: each check says what is wrong with the
//! value in a phrase ("has a character that is not a lowercase letter, digit or '-'"), and
//! [`field`] turns that into a message naming the input, the field and the value ([`shown`]:
//! cut when long, control characters escaped), so every verb refuses the same way.
//!
//! The rules are the standards' own: DNS labels and names per RFC 1123 as Kubernetes applies
//! them (lowercase), Kubernetes object names and label keys and values, IP addresses and
//! CIDRs, UUIDs (RFC 4122 text form), file names derived from input (never a path), and
//! single-line values (no control characters: they would end up in a file, a unit, a
//! certificate or a terminal).

use anyhow::{anyhow, Result};

/// What is wrong with a value, in a phrase that follows "VALUE ...".
pub type Problem = String;

/// Refuse `value` of `field` in `what` (a file or the command line) when `check` finds a
/// problem: `what: field "value" problem`.
pub fn field(
    what: &str,
    name: &str,
    value: &str,
    check: impl Fn(&str) -> std::result::Result<(), Problem>,
) -> Result<()> {
    check(value).map_err(|p| anyhow!("{what}: {name} {} {p}", shown(value)))
}

/// A value as it appears in a message: quoted, control characters escaped, cut after 80
/// characters (with how long it was).
pub fn shown(value: &str) -> String {
    const MAX: usize = 80;
    let n = value.chars().count();
    if n <= MAX {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(MAX).collect();
    format!("{head:?}… ({n} characters)")
}

/// A message made safe for a terminal: control characters other than newline and tab are
/// escaped (`\u{1b}`), so a value cannot move the cursor or recolour the screen, and a line
/// longer than [`MAX_LINE`] characters is cut, saying how much was left out.
pub fn terminal_safe(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(64 * 1024));
    for (i, line) in msg.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let n = line.chars().count();
        for c in line.chars().take(MAX_LINE) {
            if c.is_control() && c != '\t' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        if n > MAX_LINE {
            out.push_str(&format!("… ({} more characters)", n - MAX_LINE));
        }
    }
    out
}

/// The longest line of a message printed whole.
pub const MAX_LINE: usize = 2000;

/// No control characters (newlines, tabs, escapes, NUL) and not empty.
pub fn single_line(s: &str) -> std::result::Result<(), Problem> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "holds the control character {:?}; it must be one line of printable text",
            c
        )),
        None => Ok(()),
    }
}

/// An RFC 1123 label as Kubernetes uses it: 1 to 63 lowercase letters, digits and '-', not
/// starting or ending with '-'.
pub fn dns_label(s: &str) -> std::result::Result<(), Problem> {
    if s.is_empty() {
        return Err("is empty; a DNS label has 1 to 63 characters".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "is {} characters long; a DNS label has at most 63",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "has {c:?}, which is not a lowercase letter, digit or '-' (RFC 1123)"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("starts or ends with '-' (RFC 1123)".into());
    }
    Ok(())
}

/// An RFC 1123 DNS name (a Kubernetes DNS subdomain): dot-separated labels, at most 253
/// characters.
pub fn dns_name(s: &str) -> std::result::Result<(), Problem> {
    if s.len() > 253 {
        return Err(format!(
            "is {} characters long; a DNS name has at most 253",
            s.len()
        ));
    }
    for label in s.split('.') {
        dns_label(label).map_err(|p| format!("has the label {} that {p}", shown(label)))?;
    }
    Ok(())
}

/// An IPv4 or IPv6 address.
pub fn ip(s: &str) -> std::result::Result<(), Problem> {
    s.parse::<std::net::IpAddr>()
        .map(|_| ())
        .map_err(|_| "is not an IPv4 or IPv6 address".into())
}

/// A host an NTP source or a SAN may name: a DNS name or an IP address.
pub fn host(s: &str) -> std::result::Result<(), Problem> {
    if ip(s).is_ok() {
        return Ok(());
    }
    dns_name(s).map_err(|p| format!("is neither an IP address nor a DNS name: it {p}"))
}

/// A prefix length for an address of the given family.
pub fn prefix_length(ipv6: bool, len: u32) -> std::result::Result<(), Problem> {
    let max = if ipv6 { 128 } else { 32 };
    if len > max {
        return Err(format!(
            "is longer than an IPv{} prefix can be (0 to {max})",
            if ipv6 { 6 } else { 4 }
        ));
    }
    Ok(())
}

/// A CIDR: `ADDRESS/PREFIX` with a prefix that fits the address family.
pub fn cidr(s: &str) -> std::result::Result<(), Problem> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| "is not a CIDR (ADDRESS/PREFIX, e.g. 192.168.111.0/24)".to_string())?;
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("has {} where the CIDR's address goes", shown(addr)))?;
    let len: u32 = len
        .parse()
        .map_err(|_| format!("has {} where the CIDR's prefix length goes", shown(len)))?;
    prefix_length(addr.is_ipv6(), len).map_err(|p| format!("has a prefix length that {p}"))
}

/// Whether the address `ip` lies in `cidr` (both IPv4 or both IPv6); a malformed value is in
/// nothing.
pub fn cidr_contains(cidr: &str, ip: &str) -> bool {
    use std::net::IpAddr;
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len), Ok(ip)) = (
        net.parse::<IpAddr>(),
        len.parse::<u32>(),
        ip.parse::<IpAddr>(),
    ) else {
        return false;
    };
    let (net, ip, bits) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(u32::from(n)), u128::from(u32::from(i)), 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
        _ => return false,
    };
    if len > bits {
        return false;
    }
    let shift = bits - len;
    shift >= bits || (net >> shift) == (ip >> shift)
}

/// A UUID in its text form (`8-4-4-4-12` hexadecimal digits).
pub fn uuid(s: &str) -> std::result::Result<(), Problem> {
    let groups: Vec<&str> = s.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err("is not a UUID (8-4-4-4-12 hexadecimal digits)".into())
    }
}

/// A Kubernetes label key: an optional DNS-name prefix and '/', then a name of 1 to 63
/// letters, digits, '-', '_' and '.', beginning and ending with a letter or digit.
pub fn label_key(s: &str) -> std::result::Result<(), Problem> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        dns_name(p).map_err(|e| format!("has a prefix that {e}"))?;
    }
    label_name(name, false).map_err(|e| format!("has a name part that {e}"))
}

/// A Kubernetes label value: empty, or a label name.
pub fn label_value(s: &str) -> std::result::Result<(), Problem> {
    label_name(s, true)
}

fn label_name(s: &str, may_be_empty: bool) -> std::result::Result<(), Problem> {
    if s.is_empty() {
        return if may_be_empty {
            Ok(())
        } else {
            Err("is empty".into())
        };
    }
    if s.len() > 63 {
        return Err(format!("is {} characters long; at most 63", s.len()));
    }
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if let Some(c) = s.chars().find(|c| !inner(*c)) {
        return Err(format!(
            "has {c:?}; only letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(s.chars().next()) || !edge(s.chars().last()) {
        return Err("must begin and end with a letter or digit".into());
    }
    Ok(())
}

/// A file name made from input: one path component, never `.` or `..`, no control
/// characters, at most 255 bytes.
pub fn file_name(s: &str) -> std::result::Result<(), Problem> {
    single_line(s)?;
    if s == "." || s == ".." || s.contains('/') {
        return Err("would name a path, not one file (no '/', '.' or '..')".into());
    }
    if s.len() > 255 {
        return Err(format!(
            "is {} bytes long; a file name has at most 255",
            s.len()
        ));
    }
    Ok(())
}

/// A registry and optional repository path (`host[:port][/path]`), as `releaseRegistry` and
/// mirror locations are written: no scheme, no spaces or control characters.
pub fn registry_location(s: &str) -> std::result::Result<(), Problem> {
    single_line(s)?;
    if s.contains("://") {
        return Err("has a scheme; write HOST[:PORT][/PATH] without one".into());
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace()) {
        return Err(format!("has the space character {c:?}"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-/:@".contains(*c)))
    {
        return Err(format!(
            "has the character {c:?}, which no registry or repository name holds"
        ));
    }
    let host = s.split('/').next().unwrap_or_default();
    let (name, port) = match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (host, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("has the port {}, not 1 to 65535", shown(p)));
        }
    }
    let name = name.to_ascii_lowercase();
    self::host(&name).map_err(|p| format!("has the host {} that {p}", shown(host)))
}

/// An architecture as OCI images name it (Go's GOARCH values: `amd64`, `arm64`, `ppc64le`,
/// `s390x`, ...).
pub fn oci_architecture(s: &str) -> std::result::Result<(), Problem> {
    const KNOWN: &[&str] = &[
        "amd64", "arm64", "ppc64le", "s390x", "386", "arm", "riscv64", "mips64le", "loong64",
    ];
    if KNOWN.contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "is not an OCI architecture name (one of {})",
            KNOWN.join(", ")
        ))
    }
}

/// OpenSSH public keys, one per line (`TYPE BASE64 [COMMENT]`, as `authorized_keys` holds
/// them); each is parsed with the `ssh-key` crate.
pub fn ssh_public_keys(s: &str) -> std::result::Result<(), Problem> {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return Err("holds no key".into());
    }
    for (i, l) in lines.iter().enumerate() {
        ssh_key::PublicKey::from_openssh(l)
            .map_err(|e| format!("has line {} that is not an OpenSSH public key ({e})", i + 1))?;
    }
    Ok(())
}

/// A proxy URL as install-config and ImageBasedInstallationConfig write it:
/// `http[s]://[USER[:PASSWORD]@]HOST[:PORT][/]`.
pub fn proxy_url(s: &str) -> std::result::Result<(), Problem> {
    single_line(s)?;
    if s.contains(char::is_whitespace) {
        return Err("holds a space; a proxy is one URL".into());
    }
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| "is not an http:// or https:// URL".to_string())?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('?') || authority.contains('#') {
        return Err("has a path; a proxy URL is http[s]://[USER:PASSWORD@]HOST[:PORT]".into());
    }
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.strip_prefix('[') {
        // [IPv6]:port
        Some(v6) => {
            let (h, p) = v6
                .split_once(']')
                .ok_or_else(|| "has an unclosed '['".to_string())?;
            (h, p.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("has the port {}, not 1 to 65535", shown(p)));
        }
    }
    self::host(&host.to_ascii_lowercase())
        .map_err(|p| format!("has the host {} that {p}", shown(host)))
}

/// A `noProxy` list: comma-separated host names, `.domain` suffixes, IP addresses, CIDRs or `*`.
pub fn no_proxy(s: &str) -> std::result::Result<(), Problem> {
    single_line(s)?;
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let name = entry
            .strip_prefix('.')
            .unwrap_or(entry)
            .to_ascii_lowercase();
        let ok = entry == "*" || cidr(entry).is_ok() || host(&name).is_ok();
        if !ok {
            return Err(format!(
                "has the entry {} that is neither a host, a .domain, an IP address, a CIDR nor *",
                shown(entry)
            ));
        }
    }
    Ok(())
}

/// A disk as a configuration names it: an absolute path (a device under `/dev`, or a disk
/// image file) with no `.` or `..` component and no spaces.
pub fn device_path(s: &str) -> std::result::Result<(), Problem> {
    single_line(s)?;
    if !s.starts_with('/') || s.len() < 2 || s.split('/').any(|c| c == ".." || c == ".") {
        return Err(
            "is not an absolute path to a disk (e.g. /dev/vda or /dev/disk/by-id/...)".into(),
        );
    }
    if s.contains(char::is_whitespace) {
        return Err(
            "holds a space; name the device by a path without one (/dev/disk/by-id/...)".into(),
        );
    }
    Ok(())
}

/// A release version (`4.17.0`, `4.18.0-rc.1`, `4.16.0+build.5`): three dot-separated numbers,
/// then an optional `-` or `+` suffix of letters, digits, '.' and '-'.
pub fn release_version(s: &str) -> std::result::Result<(), Problem> {
    single_line(s)?;
    let end = s.find(['-', '+']).unwrap_or(s.len());
    let (core, suffix) = s.split_at(end);
    let parts: Vec<&str> = core.split('.').collect();
    let numbers = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    let suffix_ok = suffix
        .chars()
        .skip(1)
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '+')
        && suffix != "-"
        && suffix != "+";
    if numbers && suffix_ok {
        Ok(())
    } else {
        Err(
            "is not a release version (X.Y.Z, optionally -SUFFIX, e.g. 4.17.0 or 4.18.0-rc.1)"
                .into(),
        )
    }
}

/// A GPT partition and filesystem label: 1 to 16 letters, digits, '-' and '_' (what ext4 and
/// xfs labels take, so the same name labels the partition and its filesystem).
pub fn partition_label(s: &str) -> std::result::Result<(), Problem> {
    if s.is_empty() || s.len() > 16 {
        return Err(format!(
            "is {} characters long; a label has 1 to 16",
            s.len()
        ));
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(c) => Err(format!(
            "has {c:?}, which is not a letter, digit, '-' or '_'"
        )),
        None => Ok(()),
    }
}

/// A user or group name as `useradd` and `groupadd` take it (shadow-utils' portable rule):
/// 1 to 32 characters, a lowercase letter or '_' first, then lowercase letters, digits, '_'
/// and '-', and an optional final '$'.
pub fn account_name(s: &str) -> std::result::Result<(), Problem> {
    if s.is_empty() || s.len() > 32 {
        return Err(format!(
            "is {} characters long; an account name has 1 to 32",
            s.len()
        ));
    }
    let body = s.strip_suffix('$').unwrap_or(s);
    let first = body.chars().next().unwrap_or('$');
    if !(first.is_ascii_lowercase() || first == '_') {
        return Err(format!(
            "starts with {first:?}; an account name starts with a lowercase letter or '_'"
        ));
    }
    match body
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        Some(c) => Err(format!(
            "has {c:?}, which is not a lowercase letter, digit, '_' or '-'"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cidr_membership() {
        assert!(cidr_contains("10.0.2.0/24", "10.0.2.15"));
        assert!(!cidr_contains("10.0.2.0/24", "10.0.3.15"));
        assert!(cidr_contains("0.0.0.0/0", "192.0.2.1"));
        assert!(cidr_contains("fd00::/8", "fd12::1"));
        assert!(!cidr_contains("fd00::/8", "10.0.2.15"));
        assert!(!cidr_contains("10.0.2.0/33", "10.0.2.15"));
        assert!(!cidr_contains("nonsense", "10.0.2.15"));
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn account_names() {
        for ok in ["alice", "_svc", "a-b_c9", "machine$", "w"] {
            assert_eq!(account_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "1 to 32"),
            ("Alice", "starts with 'A'"),
            ("9a", "starts with '9'"),
            ("a b", "' '"),
            ("a:b", "':'"),
            ("a/../b", "'/'"),
            (&"a".repeat(33), "1 to 32"),
        ] {
            assert!(account_name(bad).unwrap_err().contains(why), "{bad}");
        }
    }

    #[test]
    fn control_characters_are_escaped_and_long_lines_cut() {
        assert_eq!(
            terminal_safe("a\u{1b}[31mb\r\nc\td"),
            "a\\u{1b}[31mb\\r\nc\td"
        );
        let long = "x".repeat(MAX_LINE + 5);
        let shown = terminal_safe(&long);
        assert!(shown.ends_with("… (5 more characters)"), "{shown}");
        assert_eq!(shown.chars().filter(|c| *c == 'x').count(), MAX_LINE);
    }

    #[test]
    fn good_and_bad_values() {
        assert!(dns_label("ibi1").is_ok());
        assert!(dns_label("Bad_Name").is_err());
        assert!(dns_label(&"a".repeat(64))
            .unwrap_err()
            .contains("at most 63"));
        assert!(dns_label("-a").is_err());
        assert!(dns_name("example.org").is_ok());
        assert!(dns_name("exa_mple.ORG").is_err());
        assert!(dns_name("a..b").is_err());
        assert!(cidr("192.168.111.0/24").is_ok());
        assert!(cidr("fd00::/64").is_ok());
        assert!(cidr("10.0.0.0/99").unwrap_err().contains("0 to 32"));
        assert!(cidr("10.0.0.0").is_err());
        assert!(prefix_length(false, 77).is_err());
        assert!(uuid("0b9f7f3e-4b7a-4c56-9a2e-2f6f1c5d9e10").is_ok());
        assert!(uuid("not-a-uuid").is_err());
        assert!(label_key("node-role.kubernetes.io/worker").is_ok());
        assert!(label_key("bad key").is_err());
        assert!(label_value("").is_ok());
        assert!(file_name("eth0").is_ok());
        for bad in ["../x", "a/b", "..", "eth0\n", ""] {
            assert!(file_name(bad).is_err(), "{bad:?}");
        }
        assert!(registry_location("quay.io/openshift-release-dev").is_ok());
        assert!(registry_location("mirror.example:5000/ocp").is_ok());
        assert!(registry_location("quay .io/x").is_err());
        assert!(registry_location("https://quay.io").is_err());
        assert!(registry_location("r:99999/x").is_err());
        assert!(host("10.0.2.2").is_ok());
        assert!(host("pool.ntp.org").is_ok());
        assert!(host("pool.ntp.org\nserver evil").is_err());
        assert!(single_line("a\tb").is_err());
        assert!(oci_architecture("arm64").is_ok());
        assert!(oci_architecture("x86_64").unwrap_err().contains("amd64"));
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMmW4fGQ0d2dDqJv1c3Q8w6l9Q2S8Cz1b9wY0mX7o0vT a";
        assert!(ssh_public_keys(key).is_ok());
        assert!(ssh_public_keys(&format!("{key}\n\n{key}\n")).is_ok());
        // the keys the VM scenarios give (vmtest links no product crate)
        for k in [
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKd9b2hxQ3JtY2ZxQ1k5b2l4d0ZxVnRrR0lqU0N0eHd4 imgmode-vmtest-ibi",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKd9b2hxQ3JtY2ZxQ1k5b2l4d0ZxVnRrR0lqU0N0eHd4 imgmode-vmtest-live",
        ] {
            assert!(ssh_public_keys(k).is_ok(), "{k}");
        }
        for bad in [
            "hello",
            "ssh-ed25519 AAAAC3Nza test",
            "ssh-ed25519 AAAA k",
            "",
        ] {
            assert!(ssh_public_keys(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn proxies_devices_versions_and_labels() {
        for good in [
            "http://proxy.example:3128",
            "https://user:pw@10.0.0.1:8443/",
            "http://[fd00::1]:3128",
        ] {
            assert!(proxy_url(good).is_ok(), "{good}");
        }
        for bad in [
            "proxy.example:3128",
            "http://proxy example",
            "http://p:0",
            "http://p/path",
            "http://p\n",
            "ftp://p",
        ] {
            assert!(proxy_url(bad).is_err(), "{bad:?}");
        }
        assert!(no_proxy(".cluster.local,10.0.0.0/8,localhost,*,fd00::1").is_ok());
        assert!(no_proxy("a b").is_err());
        assert!(no_proxy("a,\nb").is_err());
        assert!(device_path("/dev/disk/by-id/wwn-0x5000c500a0b1c2d3").is_ok());
        for bad in [
            "vda",
            "/dev/../etc/passwd",
            "/dev/vda\nExecStart=x",
            "/dev/v da",
        ] {
            assert!(device_path(bad).is_err(), "{bad:?}");
        }
        for good in ["4.17.0", "4.18.0-rc.1", "4.16.0+build.5", "10.0.12-ec.2"] {
            assert!(release_version(good).is_ok(), "{good}");
        }
        for bad in [
            "4.17",
            "4.17.x",
            "v4.17.0",
            "4.17.0-",
            "4.17.0 ",
            "4.17.0-a b",
        ] {
            assert!(release_version(bad).is_err(), "{bad:?}");
        }
        assert!(partition_label("varlibcontainers").is_ok());
        assert!(partition_label("varlibcontainers1").is_err());
        assert!(partition_label("a b").is_err());
    }

    #[test]
    fn messages_name_the_field_and_show_the_value_safely() {
        let e = field("ibc.yaml", "hostname", "a\nb", single_line).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ibc.yaml: hostname \"a\\nb\" holds the control character '\\n'; it must be one line of printable text"
        );
        let long = "x".repeat(1_000_000);
        let s = shown(&long);
        assert!(s.len() < 120 && s.ends_with("(1000000 characters)"), "{s}");
    }

    proptest! {
        /// Whatever a user types, a value that passes these checks is safe to put in a file
        /// name, a unit, a certificate or a terminal: no control characters, no path.
        #[test]
        fn what_passes_is_safe(s in "\\PC*|.*[\\n\\r\\t/.].*") {
            for check in [
                dns_label, dns_name, host, file_name, registry_location, label_key, proxy_url,
                no_proxy, device_path, release_version, partition_label,
            ] {
                if check(&s).is_ok() {
                    prop_assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
                }
            }
            if file_name(&s).is_ok() {
                prop_assert!(!s.contains('/') && s != ".." && s != ".");
            }
            if dns_name(&s).is_ok() {
                prop_assert!(s.len() <= 253 && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'));
            }
        }

        #[test]
        fn shown_never_prints_a_control_character(s in ".*") {
            prop_assert!(!shown(&s).chars().any(|c| c.is_control()));
        }

        #[test]
        fn cidrs_with_valid_parts_pass(a in any::<[u8; 4]>(), len in 0u32..=32) {
            let s = format!("{}.{}.{}.{}/{len}", a[0], a[1], a[2], a[3]);
            prop_assert!(cidr(&s).is_ok(), "{s}");
        }
    }
}

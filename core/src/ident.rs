//! Identifiers that end up in DNS names, URLs and Kubernetes object names.

/// True for an RFC 1123 DNS label: `[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?`.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && b.len() <= 63 && ok(&b[0]) && ok(&b[b.len() - 1]) && b.iter().all(|c| ok(c) || *c == b'-')
}

/// The node id for the `index`-th node of an instance type: `inf1.6xlarge`, 0 → `inf1-6xlarge-000`.
/// Characters that are not allowed in a DNS label become `-`; the result is always a DNS label.
pub fn node_id(instance_type: &str, index: usize) -> String {
    let mut stem: String =
        instance_type.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let suffix = format!("-{index:03}");
    stem.truncate(63 - suffix.len());
    let stem = stem.trim_matches('-');
    let stem = if stem.is_empty() { "node" } else { stem };
    format!("{stem}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "bert-0001", "x1", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "é"] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn node_ids_are_dns_labels() {
        assert_eq!(node_id("inf1.6xlarge", 0), "inf1-6xlarge-000");
        assert_eq!(node_id("g4dn.12xlarge", 41), "g4dn-12xlarge-041");
        assert_eq!(node_id("Weird_Type..", 1234), "weird-type-1234");
        assert!(is_dns_label(&node_id(&"x".repeat(100), 7)));
        assert!(is_dns_label(&node_id("...", 7)));
    }
}

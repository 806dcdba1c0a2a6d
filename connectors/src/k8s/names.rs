//! Kubernetes names, validated before any call.
//!
//! Names reach steps through templates, and templates read alert labels,
//! which come from outside. A label like `web; rm -rf /` or `../x` must
//! never become part of an API path, so every name and namespace is checked
//! against the DNS-1123 rules the API server itself applies, here, first.

use super::KubeError;

/// A DNS-1123 label: at most 63 characters of `a-z`, `0-9` and `-`,
/// starting and ending with an alphanumeric. Namespaces and container
/// names are labels.
pub fn label(what: &str, value: &str) -> Result<(), KubeError> {
    if value.is_empty() || value.len() > 63 {
        return Err(bad(what, value, "must be 1 to 63 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad(
            what,
            value,
            "may hold only lowercase letters, digits and '-'",
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(bad(
            what,
            value,
            "must start and end with a letter or digit",
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated labels.
/// Pod, Deployment and node names are subdomains.
pub fn subdomain(what: &str, value: &str) -> Result<(), KubeError> {
    if value.is_empty() || value.len() > 253 {
        return Err(bad(what, value, "must be 1 to 253 characters"));
    }
    for part in value.split('.') {
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || part.starts_with('-')
            || part.ends_with('-')
        {
            return Err(bad(
                what,
                value,
                "must be lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit",
            ));
        }
    }
    Ok(())
}

fn bad(what: &str, value: &str, why: &str) -> KubeError {
    // Debug formatting escapes control characters, so the message itself
    // cannot carry a forged log line.
    KubeError::Invalid(format!(
        "{what} {value:?} is not a valid Kubernetes name: it {why} (DNS-1123)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_kubernetes_accepts() {
        for ok in ["web", "web-7d9f8-abcde", "a", "0", "kube-system"] {
            label("namespace", ok).unwrap();
            subdomain("pod", ok).unwrap();
        }
        subdomain("node", "ip-10-0-0-1.ec2.internal").unwrap();
        label("namespace", &"a".repeat(63)).unwrap();
    }

    #[test]
    fn refuses_what_could_escape_a_path_or_a_shell() {
        for bad in [
            "",
            "web; rm -rf /",
            "../x",
            "x/../../y",
            "Web",
            "-web",
            "web-",
            "web\nInjected: 1",
            "web%2F..",
            "a b",
            "é",
        ] {
            let e = label("namespace", bad).unwrap_err().to_string();
            assert!(e.contains("not a valid Kubernetes name"), "{bad:?}: {e}");
            assert!(subdomain("pod", bad).is_err(), "{bad:?}");
        }
        assert!(label("namespace", "a.b").is_err());
        assert!(label("namespace", &"a".repeat(64)).is_err());
        assert!(subdomain("pod", "a..b").is_err());
        assert!(subdomain("pod", &"a".repeat(254)).is_err());
        let e = label("namespace", "web\nx").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
    }
}

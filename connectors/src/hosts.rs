//! Which hosts steps may reach (`executor.allowed_hosts`).
//!
//! Runbooks build URLs from alert labels and annotations
//! (`http://{{alert.labels.instance}}/debug/pprof`), and whoever can send
//! an alert chooses those. With an allowlist configured, a step whose
//! rendered parameters name a URL (each step type says which, through
//! `Step::urls`) on a host outside it fails before any request is made. Patterns: a host name (`prometheus.monitoring`), a
//! suffix (`*.svc.cluster.local`, which does not match the bare suffix),
//! an IP address, or a CIDR block (`10.0.0.0/8`, `fd00::/8`). Ports are
//! not part of the match.

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Host(String),
    Suffix(String),
    Net(IpAddr, u8),
}

/// Why a pattern of the list, or a URL a step would call, is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// A pattern of `executor.allowed_hosts` that is not one.
    #[error("executor.allowed_hosts {pattern:?}: {why}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// What it should be.
        why: String,
    },
    /// Not a URL at all.
    #[error("url {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// The parser's words.
        reason: String,
    },
    /// A URL without a host (`file:///...`).
    #[error("url {0:?} has no host")]
    NoHost(String),
    /// A host outside the list.
    #[error("url {url:?}: host {host} is not in executor.allowed_hosts")]
    NotAllowed {
        /// The URL.
        url: String,
        /// Its host.
        host: String,
    },
}

/// A parsed `executor.allowed_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAllowlist(Vec<Pattern>);

impl HostAllowlist {
    /// Parses the patterns; the error names the first bad one.
    pub fn parse(patterns: &[String]) -> Result<HostAllowlist, HostError> {
        patterns
            .iter()
            .map(|p| pattern(p))
            .collect::<Result<_, _>>()
            .map(HostAllowlist)
    }

    /// Whether `host` (a name or an IP address, without port) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: Option<IpAddr> = host.parse().ok();
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|p| match p {
            Pattern::Host(h) => *h == name,
            Pattern::Suffix(s) => name.len() > s.len() + 1 && name.ends_with(&format!(".{s}")),
            Pattern::Net(net, bits) => ip.is_some_and(|ip| in_net(ip, *net, *bits)),
        })
    }

    /// Checks a URL a step will call: it must be an http(s) URL whose host
    /// is allowed.
    pub fn check_url(&self, url: &str) -> Result<(), HostError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| HostError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let host = parsed
            .host_str()
            .ok_or_else(|| HostError::NoHost(url.to_string()))?;
        if self.allows(host) {
            Ok(())
        } else {
            Err(HostError::NotAllowed {
                url: url.to_string(),
                host: host.to_string(),
            })
        }
    }
}

fn pattern(p: &str) -> Result<Pattern, HostError> {
    let bad = |why: &str| HostError::Pattern {
        pattern: p.to_string(),
        why: why.to_string(),
    };
    if p.contains("://") {
        return Err(bad("a host, not a URL"));
    }
    if let Some((addr, bits)) = p.split_once('/') {
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an IP address before /"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| bad(&format!("prefix length must be 0 to {max}")))?;
        return Ok(Pattern::Net(ip, bits));
    }
    if let Ok(ip) = p.parse::<IpAddr>() {
        return Ok(Pattern::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    let name = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    match p.strip_prefix("*.") {
        Some(s) if name(s) => Ok(Pattern::Suffix(s.to_ascii_lowercase())),
        None if name(p) => Ok(Pattern::Host(p.to_ascii_lowercase())),
        _ => Err(bad("a host name, *.suffix, an IP address or a CIDR block")),
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> HostAllowlist {
        HostAllowlist::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_suffixes_addresses_and_blocks() {
        let l = list(&[
            "prometheus.monitoring",
            "*.svc.cluster.local",
            "10.0.0.0/8",
            "127.0.0.1",
            "fd00::/8",
        ]);
        assert!(l.allows("prometheus.monitoring"));
        assert!(l.allows("Prometheus.Monitoring."));
        assert!(l.allows("checkout.shop.svc.cluster.local"));
        assert!(!l.allows("svc.cluster.local"));
        assert!(!l.allows("evilsvc.cluster.local"));
        assert!(l.allows("10.1.2.3"));
        assert!(!l.allows("11.1.2.3"));
        assert!(l.allows("127.0.0.1"));
        assert!(!l.allows("127.0.0.2"));
        assert!(l.allows("[fd12::1]"));
        assert!(!l.allows("fe80::1"));
        assert!(!l.allows("169.254.169.254"));
        assert!(list(&["0.0.0.0/0"]).allows("8.8.8.8"));
    }

    #[test]
    fn bad_patterns_are_named() {
        for (p, why) in [
            ("10.0.0.0/33", "prefix length must be 0 to 32"),
            ("nope/8", "not an IP address"),
            ("*", "a host name"),
            ("a..b", "a host name"),
            ("http://x", "a host, not a URL"),
        ] {
            let e = HostAllowlist::parse(&[p.to_string()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(p) && e.contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn urls_are_checked_by_host_before_any_request() {
        let l = list(&["*.svc.cluster.local", "127.0.0.1"]);
        assert!(
            l.check_url("http://checkout.shop.svc.cluster.local:6060")
                .is_ok()
        );
        assert!(l.check_url("http://127.0.0.1:9090/").is_ok());
        let e = l
            .check_url("http://169.254.169.254/latest/meta-data")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "url \"http://169.254.169.254/latest/meta-data\": host 169.254.169.254 is not in executor.allowed_hosts"
        );
        // An @ in the authority does not smuggle a host past the check.
        let e = l
            .check_url("http://127.0.0.1@evil.example:80/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("host evil.example"), "{e}");
        assert!(l.check_url("https://argocd.example").is_err());
        assert!(l.check_url("not a url").is_err());
    }
}

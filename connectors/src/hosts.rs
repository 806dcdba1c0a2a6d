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

/// An address a step must not reach unless `allowed_hosts` names it:
/// loopback, link-local (cloud metadata services answer at
/// 169.254.169.254 and fd00:ec2::254), unspecified and broadcast, and the
/// same in IPv4-mapped IPv6.
pub fn is_guarded(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_broadcast()
        }
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.is_unspecified()
                || (a.segments()[0] & 0xffc0) == 0xfe80
                || a == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || a.to_ipv4_mapped()
                    .is_some_and(|v4| is_guarded(IpAddr::V4(v4)))
        }
    }
}

/// Whether an address is a cloud metadata or other link-local address:
/// refused even without an allowlist (quench on loopback, for a developer).
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => {
            (a.segments()[0] & 0xffc0) == 0xfe80
                || a == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || a.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
    }
}

impl HostAllowlist {
    /// Whether the list names this address itself (an IP or a CIDR block
    /// holding it) or names `host` exactly: what it takes to reach a
    /// guarded address. A `*.suffix` pattern is not enough.
    fn names(&self, host: &str, ip: IpAddr) -> bool {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|p| match p {
            Pattern::Host(h) => *h == name,
            Pattern::Suffix(_) => false,
            Pattern::Net(net, bits) => in_net(ip, *net, *bits),
        })
    }
}

/// The addresses of `host` a step may connect to: a guarded address
/// ([`is_guarded`]) only when the list names it or the host exactly; a
/// link-local one never without such a list.
pub fn screen(
    host: &str,
    addrs: Vec<std::net::SocketAddr>,
    hosts: Option<&HostAllowlist>,
) -> Result<Vec<std::net::SocketAddr>, String> {
    let ok: Vec<_> = addrs
        .iter()
        .copied()
        .filter(|a| match hosts {
            Some(h) => !is_guarded(a.ip()) || h.names(host, a.ip()),
            None => !is_link_local(a.ip()),
        })
        .collect();
    if ok.is_empty() && !addrs.is_empty() {
        let seen: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        return Err(format!(
            "{host} resolves to {}: a loopback, link-local or metadata address that executor.allowed_hosts does not name",
            seen.join(", ")
        ));
    }
    Ok(ok)
}

/// Resolves names for the steps' HTTP client and drops the addresses
/// [`screen`] refuses, at connect time: a name that passed the list
/// cannot lead to the metadata service or to quench's own loopback.
struct Screened(Option<HostAllowlist>);

impl reqwest::dns::Resolve for Screened {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let hosts = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok = screen(&host, addrs, hosts.as_ref())?;
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client steps use: names resolved through [`screen`], and
/// redirects followed only within the same scheme, host and port (at most
/// 5): a redirect elsewhere would skip the host check and take the step's
/// secret headers along, so it is an error that names where it pointed.
pub fn client(hosts: Option<HostAllowlist>) -> reqwest::Client {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.follow();
        };
        let same = attempt.url().scheme() == first.scheme()
            && attempt.url().host_str() == first.host_str()
            && attempt.url().port_or_known_default() == first.port_or_known_default();
        if !same {
            let to = attempt.url().to_string();
            return attempt.error(format!(
                "a redirect to {to} leaves the host the step was given; quench does not follow it"
            ));
        }
        if attempt.previous().len() > 5 {
            return attempt.error("more than 5 redirects");
        }
        attempt.follow()
    });
    reqwest::Client::builder()
        .redirect(policy)
        .dns_resolver(std::sync::Arc::new(Screened(hosts)))
        .build()
        .unwrap_or_default()
}

/// A URL whose host is a link-local (metadata) address, refused even
/// without an allowlist.
pub fn check_literal(url: &str) -> Result<(), HostError> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Ok(());
    };
    let Some(ip) = parsed
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
    else {
        return Ok(());
    };
    if is_link_local(ip) {
        return Err(HostError::NotAllowed {
            url: url.to_string(),
            host: ip.to_string(),
        });
    }
    Ok(())
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

    #[test]
    fn resolved_addresses_are_screened() {
        let a = |s: &str| -> std::net::SocketAddr { s.parse().unwrap() };
        let list =
            HostAllowlist::parse(&["*.svc.cluster.local".into(), "localhost".into()]).unwrap();
        // A name under an allowed suffix that resolves to the metadata
        // service, or to loopback: refused, saying where it led.
        let e = screen(
            "x.svc.cluster.local",
            vec![a("169.254.169.254:80")],
            Some(&list),
        )
        .unwrap_err();
        assert!(
            e.contains("169.254.169.254") && e.contains("metadata"),
            "{e}"
        );
        assert!(screen("x.svc.cluster.local", vec![a("127.0.0.1:80")], Some(&list)).is_err());
        // Mixed answers keep the ordinary addresses only.
        let ok = screen(
            "x.svc.cluster.local",
            vec![a("127.0.0.1:80"), a("10.1.2.3:80")],
            Some(&list),
        )
        .unwrap();
        assert_eq!(ok, vec![a("10.1.2.3:80")]);
        // Named exactly: allowed.
        assert!(screen("localhost", vec![a("127.0.0.1:80")], Some(&list)).is_ok());
        // Without a list (quench on loopback): link-local still refused,
        // loopback allowed.
        assert!(screen("m", vec![a("[fe80::1]:80")], None).is_err());
        assert!(screen("m", vec![a("[::ffff:169.254.169.254]:80")], None).is_err());
        assert!(screen("m", vec![a("127.0.0.1:80")], None).is_ok());
        assert!(check_literal("http://169.254.169.254/latest/meta-data").is_err());
        assert!(check_literal("http://[fd00:ec2::254]/").is_err());
        assert!(check_literal("http://10.0.0.1/").is_ok());
    }

    /// A redirect to another host is not followed (it would skip the host
    /// check and carry the step's secret headers); within the host it is.
    #[tokio::test]
    async fn redirects_stay_on_the_host_they_started_on() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let app = axum::Router::new()
            .route(
                "/away",
                axum::routing::get(move || async move {
                    (
                        axum::http::StatusCode::FOUND,
                        [("location", format!("http://localhost:{port}/there"))],
                    )
                }),
            )
            .route(
                "/here",
                axum::routing::get(|| async {
                    (axum::http::StatusCode::FOUND, [("location", "/there")])
                }),
            )
            .route("/there", axum::routing::get(|| async { "arrived" }));
        tokio::spawn(async move { axum::serve(l, app).await });
        let http = client(None);
        let e = http
            .get(format!("http://127.0.0.1:{port}/away"))
            .send()
            .await
            .unwrap_err();
        let chain = format!("{e:?}");
        assert!(chain.contains("leaves the host"), "{chain}");
        let body = http
            .get(format!("http://127.0.0.1:{port}/here"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "arrived");
    }
}

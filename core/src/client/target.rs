//! Parsing channel targets: `http://host:port`, `host:port`, `dns:` and `unix:` forms.

use std::path::PathBuf;

use http::uri::{Authority, Scheme};

use crate::status::Status;
use crate::transport::Address;

/// Port used when a `dns:` or bare target names none (the gRPC naming doc's default).
const DEFAULT_GRPC_PORT: u16 = 443;

/// Port used when an `http://` target names none.
const DEFAULT_HTTP_PORT: u16 = 80;

/// A parsed target: where to connect and what to put in `:scheme` and `:authority`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) address: Address,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
}

impl Target {
    /// Parses a target string; a malformed one is an INVALID_ARGUMENT status naming it.
    pub(crate) fn parse(target: &str) -> Result<Target, Status> {
        let bad = |why: &str| Status::invalid_argument(format!("invalid target {target:?}: {why}"));
        let target = target.trim();
        if target.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(rest) = target.strip_prefix("unix:") {
            // unix:///abs/path, unix:/abs/path, unix:relative/path
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(bad("missing socket path"));
            }
            return Ok(Target {
                address: Address::Unix(PathBuf::from(path)),
                scheme: Scheme::HTTP,
                authority: Authority::from_static("localhost"),
            });
        }
        if let Some(rest) = target.strip_prefix("http://") {
            let hostport = rest.trim_end_matches('/');
            return host_target(hostport, DEFAULT_HTTP_PORT).map_err(|why| bad(&why));
        }
        if target.starts_with("https://") {
            return Err(bad(
                "TLS is not supported yet; use http:// or a plaintext target",
            ));
        }
        let hostport = match target.strip_prefix("dns:") {
            // dns://authority/host:port: the DNS server authority is not supported; the
            // system resolver is used.
            Some(rest) => match rest.strip_prefix("//") {
                Some(with_authority) => match with_authority.split_once('/') {
                    Some(("", hostport)) => hostport,
                    Some(_) => return Err(bad("a DNS server authority is not supported")),
                    None => return Err(bad("expected dns:///host:port")),
                },
                None => rest,
            },
            None => target,
        };
        if hostport.contains("://") {
            return Err(bad("unsupported scheme"));
        }
        host_target(hostport, DEFAULT_GRPC_PORT).map_err(|why| bad(&why))
    }
}

fn host_target(hostport: &str, default_port: u16) -> Result<Target, String> {
    if hostport.is_empty() {
        return Err("missing host".into());
    }
    if hostport.contains('/') {
        return Err("a path is not allowed".into());
    }
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        let port = match after {
            "" => default_port,
            p => parse_port(p.strip_prefix(':').ok_or("expected ':' after ']'")?)?,
        };
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("invalid IPv6 address {host:?}"))?;
        (host.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("IPv6 addresses must be in brackets, like [::1]:50051".into());
            }
            Some((host, port)) => (host.to_string(), parse_port(port)?),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    let authority_text = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let authority = authority_text
        .parse::<Authority>()
        .map_err(|_| format!("invalid host {host:?}"))?;
    Ok(Target {
        address: Address::Host { host, port },
        scheme: Scheme::HTTP,
        authority,
    })
}

fn parse_port(port: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .map_err(|_| format!("invalid port {port:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(t: &str) -> (String, u16, String) {
        let t = Target::parse(t).unwrap();
        match t.address {
            Address::Host { host, port } => (host, port, t.authority.to_string()),
            Address::Unix(_) => panic!("not a host"),
        }
    }

    #[test]
    fn host_forms() {
        assert_eq!(
            host("http://127.0.0.1:50051"),
            ("127.0.0.1".into(), 50051, "127.0.0.1:50051".into())
        );
        assert_eq!(
            host("http://example.com/"),
            ("example.com".into(), 80, "example.com:80".into())
        );
        assert_eq!(
            host("localhost:8080"),
            ("localhost".into(), 8080, "localhost:8080".into())
        );
        assert_eq!(host("dns:///foo:1"), ("foo".into(), 1, "foo:1".into()));
        assert_eq!(host("dns:foo"), ("foo".into(), 443, "foo:443".into()));
        assert_eq!(host("[::1]:9"), ("::1".into(), 9, "[::1]:9".into()));
    }

    #[test]
    fn unix_forms() {
        for (t, p) in [
            ("unix:/tmp/a.sock", "/tmp/a.sock"),
            ("unix:///tmp/a.sock", "/tmp/a.sock"),
            ("unix:rel.sock", "rel.sock"),
        ] {
            assert_eq!(
                Target::parse(t).unwrap().address,
                Address::Unix(PathBuf::from(p)),
                "{t}"
            );
        }
    }

    #[test]
    fn bad_targets_are_clear_errors() {
        for t in [
            "",
            "unix:",
            "http://",
            "host:notaport",
            "host:70000",
            "::1:80",
            "[::1",
            "ftp://x:1",
            "https://x:1",
            "a/b:1",
            "dns://8.8.8.8/foo:1",
        ] {
            let err = Target::parse(t).unwrap_err();
            assert_eq!(err.code(), crate::Code::InvalidArgument, "{t}");
            assert!(err.message().contains("invalid target"), "{t}: {err}");
        }
    }
}

//! Parsing channel targets, following gRPC's naming doc (`doc/naming.md` in grpc/grpc):
//!
//! - `dns:[//authority/]host[:port]`, or just `host[:port]`: the system resolver (an IP literal
//!   needs none); `dns:///host:port` is the usual form. An authority names the DNS server to
//!   ask instead, by IP address and port (53 by default): `dns://10.0.0.53:5353/host:port`.
//! - `ipv4:addr[:port][,addr[:port],...]` and `ipv6:addr[,...]` / `ipv6:[addr]:port[,...]`:
//!   fixed addresses.
//! - `unix:path` (relative to the working directory, or absolute), `unix:///abs/path`.
//! - `unix-abstract:name`: a socket in Linux's abstract namespace.
//! - `http://host[:port]`: as `dns:`, plaintext, with port 80 by default.
//! - `https://host[:port]`: as `dns:`, over TLS (the `tls` feature), with port 443 by default.
//!
//! Other targets use TLS when the channel has a TLS config. Their ports default to 443, as in
//! the naming doc. Paths and abstract names are
//! percent-decoded, as URI paths are. Schemes are case-insensitive.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use http::uri::{Authority, Scheme};

use crate::status::Status;
use crate::transport::Address;

/// Port used when a `dns:`, `ipv4:`, `ipv6:` or bare target names none (the naming doc's
/// default).
const DEFAULT_GRPC_PORT: u16 = 443;

/// Port used when an `http://` target names none (RFC 9110 §4.2.1).
const DEFAULT_HTTP_PORT: u16 = 80;

/// Port used when an `https://` target names none (RFC 9110 §4.2.2).
const DEFAULT_HTTPS_PORT: u16 = 443;

/// Longest abstract socket name: `sun_path` is 108 bytes on Linux (unix(7)), one of them the
/// leading NUL that marks the abstract namespace.
const MAX_ABSTRACT_NAME: usize = 107;

/// The schemes [`Target::parse`] knows, for error messages.
const SCHEMES: &str = "dns, ipv4, ipv6, unix, unix-abstract, http, https";

/// A parsed target: what to resolve and what to put in `:scheme` and `:authority`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// What the resolver starts from.
    pub(crate) kind: TargetKind,
    /// `:scheme` of every request: `https` for `https://` targets (and, once the channel
    /// applies its TLS config, for any target over TLS), else `http`.
    pub(crate) scheme: Scheme,
    /// `:authority` of every request: `host:port` for DNS names, the first address for IP
    /// lists, `localhost` for Unix sockets.
    pub(crate) authority: Authority,
    /// What the target says about TLS: `Some(true)` for `https://`, `Some(false)` for
    /// `http://`, `None` when the channel's TLS config decides.
    pub(crate) tls: Option<bool>,
}

/// What a target resolves from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetKind {
    /// A host name for the system resolver, and the port every address gets.
    Dns {
        /// The name, never an IP literal (those become [`TargetKind::Static`]).
        host: String,
        /// TCP port.
        port: u16,
        /// The DNS server the target names, if any (else the system resolver is asked).
        server: Option<SocketAddr>,
    },
    /// Addresses given in the target itself; never empty.
    Static(Vec<Address>),
}

impl Target {
    /// Parses a target string; a malformed one is an INVALID_ARGUMENT status naming it and
    /// the problem.
    pub(crate) fn parse(text: &str) -> Result<Target, Status> {
        let target = text.trim();
        let parsed = if target.is_empty() {
            Err("empty".to_string())
        } else {
            match target.split_once(':') {
                Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                    "dns" => dns(rest),
                    "ipv4" => ip_list(rest, "ipv4", ipv4_address),
                    "ipv6" => ip_list(rest, "ipv6", ipv6_address),
                    "unix" => unix(rest),
                    "unix-abstract" => unix_abstract(rest),
                    "http" => url(rest, false),
                    "https" => url(rest, true),
                    _ => bare(target, Some(scheme)),
                },
                None => bare(target, None),
            }
        };
        parsed.map_err(|why| Status::invalid_argument(format!("invalid target {text:?}: {why}")))
    }
}

/// `host[:port]` with no scheme: a DNS target, unless it looks like a URL we do not know.
fn bare(target: &str, scheme: Option<&str>) -> Result<Target, String> {
    if let Some(scheme) = scheme.filter(|_| target.contains("://")) {
        return Err(format!(
            "unsupported scheme {scheme:?} (supported: {SCHEMES})"
        ));
    }
    host_target(target, DEFAULT_GRPC_PORT).map_err(|why| match scheme {
        Some(scheme) if is_scheme(scheme) => {
            format!("{why} (or unknown scheme {scheme:?}; supported: {SCHEMES})")
        }
        _ => why,
    })
}

/// `dns:host[:port]`, `dns:///host[:port]`, or `dns://server[:port]/host[:port]` with the
/// DNS server's IP address.
fn dns(rest: &str) -> Result<Target, String> {
    let (server, hostport) = match rest.strip_prefix("//") {
        Some(after) => match after.split_once('/') {
            Some(("", hostport)) => (None, hostport),
            Some((authority, hostport)) => (Some(dns_server(authority)?), hostport),
            None => {
                return Err("expected dns:///host:port (three slashes) or dns:host:port".into());
            }
        },
        None => (None, rest),
    };
    let mut target = host_target(hostport, DEFAULT_GRPC_PORT)?;
    if let TargetKind::Dns { server: s, .. } = &mut target.kind {
        *s = server;
    }
    Ok(target)
}

/// A DNS server authority: an IP address, with a port or 53.
fn dns_server(authority: &str) -> Result<SocketAddr, String> {
    const DNS_PORT: u16 = 53;
    let not_ip = || {
        format!(
            "the DNS server authority {authority:?} must be an IP address with an optional port"
        )
    };
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = authority.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    if let Some(ip) = authority
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        let ip = ip.parse::<std::net::Ipv6Addr>().map_err(|_| not_ip())?;
        return Ok(SocketAddr::new(ip.into(), DNS_PORT));
    }
    Err(not_ip())
}

/// `http://host[:port][/]`, or `https://` when `tls`.
fn url(rest: &str, tls: bool) -> Result<Target, String> {
    let (name, default_port) = match tls {
        false => ("http", DEFAULT_HTTP_PORT),
        true => ("https", DEFAULT_HTTPS_PORT),
    };
    if tls && !cfg!(feature = "tls") {
        return Err("https:// needs TLS, which this build of plexus leaves out \
                    (enable its `tls` feature)"
            .into());
    }
    let hostport = rest
        .strip_prefix("//")
        .ok_or_else(|| format!("expected {name}://host:port"))?;
    let hostport = hostport.strip_suffix('/').unwrap_or(hostport);
    if hostport.contains('@') {
        return Err("user info is not allowed".into());
    }
    let mut target = host_target(hostport, default_port)?;
    target.tls = Some(tls);
    if tls {
        target.scheme = Scheme::HTTPS;
    }
    Ok(target)
}

/// A host and port: an IP literal becomes a static address, a name a DNS target.
fn host_target(hostport: &str, default_port: u16) -> Result<Target, String> {
    if hostport.contains('/') {
        return Err("a path is not allowed".into());
    }
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        let ip = parse_ipv6(host)?;
        let port = match after {
            "" => default_port,
            _ => parse_port(after.strip_prefix(':').ok_or("expected ':' after ']'")?)?,
        };
        return Ok(static_target(vec![SocketAddr::new(ip.into(), port)]));
    } else {
        match hostport.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("IPv6 addresses need brackets, as in [::1]:50051".into());
            }
            Some((host, port)) => (host, parse_port(port)?),
            None => (hostport, default_port),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(static_target(vec![SocketAddr::new(ip, port)]));
    }
    if !is_host_name(host) {
        return Err(format!("invalid host name {host:?}"));
    }
    let authority = format!("{host}:{port}")
        .parse::<Authority>()
        .map_err(|_| format!("invalid host name {host:?}"))?;
    Ok(Target {
        kind: TargetKind::Dns {
            host: host.to_string(),
            port,
            server: None,
        },
        scheme: Scheme::HTTP,
        authority,
        tls: None,
    })
}

/// `ipv4:` and `ipv6:` lists: `a[:p],b[:p]`, optionally after an empty authority (`//`).
fn ip_list(
    rest: &str,
    scheme: &str,
    parse: fn(&str) -> Result<SocketAddr, String>,
) -> Result<Target, String> {
    let list = match rest.strip_prefix("//") {
        Some(after) => match after.split_once('/') {
            Some(("", list)) => list,
            _ => {
                return Err(format!(
                    "an authority is not supported; use {scheme}:addr:port"
                ));
            }
        },
        None => rest,
    };
    if list.is_empty() {
        return Err("missing address".into());
    }
    let addrs = list
        .split(',')
        .map(|item| match item {
            "" => Err("empty address in the list".to_string()),
            _ => parse(item),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(static_target(addrs))
}

/// `1.2.3.4` or `1.2.3.4:port`.
fn ipv4_address(item: &str) -> Result<SocketAddr, String> {
    let (ip, port) = item.split_once(':').unwrap_or((item, ""));
    let ip = ip
        .parse::<Ipv4Addr>()
        .map_err(|_| format!("invalid IPv4 address {ip:?}"))?;
    let port = if item.contains(':') {
        parse_port(port)?
    } else {
        DEFAULT_GRPC_PORT
    };
    Ok(SocketAddr::new(ip.into(), port))
}

/// `::1`, `[::1]` or `[::1]:port`.
fn ipv6_address(item: &str) -> Result<SocketAddr, String> {
    let Some(rest) = item.strip_prefix('[') else {
        let ip = item.parse::<Ipv6Addr>().map_err(|_| {
            format!("invalid IPv6 address {item:?} (with a port, use brackets: [::1]:50051)")
        })?;
        return Ok(SocketAddr::new(ip.into(), DEFAULT_GRPC_PORT));
    };
    let (ip, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
    let port = match after {
        "" => DEFAULT_GRPC_PORT,
        _ => parse_port(after.strip_prefix(':').ok_or("expected ':' after ']'")?)?,
    };
    Ok(SocketAddr::new(parse_ipv6(ip)?.into(), port))
}

fn parse_ipv6(ip: &str) -> Result<Ipv6Addr, String> {
    if ip.contains('%') {
        return Err(format!("IPv6 zone IDs are not supported ({ip:?})"));
    }
    ip.parse::<Ipv6Addr>()
        .map_err(|_| format!("invalid IPv6 address {ip:?}"))
}

/// `unix:path` (relative or absolute) or `unix:///abs/path`.
fn unix(rest: &str) -> Result<Target, String> {
    let path = match rest.strip_prefix("//") {
        Some(abs) if abs.starts_with('/') => abs,
        Some(_) => {
            return Err(
                "unix:// takes an absolute path, as in unix:///run/app.sock \
                 (an authority is not supported)"
                    .into(),
            );
        }
        None => rest,
    };
    let bytes = percent_decode(path)?;
    if bytes.is_empty() {
        return Err("missing socket path".into());
    }
    if bytes.contains(&0) {
        return Err("a socket path cannot contain NUL bytes".into());
    }
    Ok(Target {
        kind: TargetKind::Static(vec![Address::Unix(path_from_bytes(bytes)?)]),
        scheme: Scheme::HTTP,
        authority: Authority::from_static("localhost"),
        tls: None,
    })
}

#[cfg(unix)]
fn path_from_bytes(bytes: Vec<u8>) -> Result<PathBuf, String> {
    use std::os::unix::ffi::OsStringExt;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: Vec<u8>) -> Result<PathBuf, String> {
    String::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|_| "the socket path is not UTF-8".to_string())
}

/// `unix-abstract:name`: every byte after the colon, percent-decoded, is the name.
fn unix_abstract(rest: &str) -> Result<Target, String> {
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return Err("abstract Unix sockets (unix-abstract:) exist only on Linux".into());
    }
    let name = percent_decode(rest)?;
    if name.is_empty() {
        return Err("missing abstract socket name".into());
    }
    if name.len() > MAX_ABSTRACT_NAME {
        return Err(format!(
            "the abstract socket name is {} bytes; at most {MAX_ABSTRACT_NAME} fit",
            name.len()
        ));
    }
    Ok(Target {
        kind: TargetKind::Static(vec![Address::UnixAbstract(name)]),
        scheme: Scheme::HTTP,
        authority: Authority::from_static("localhost"),
        tls: None,
    })
}

/// A target over fixed TCP addresses; `:authority` is the first one.
fn static_target(addrs: Vec<SocketAddr>) -> Target {
    let authority = addrs[0]
        .to_string()
        .parse::<Authority>()
        .expect("a socket address is a valid authority");
    Target {
        kind: TargetKind::Static(addrs.into_iter().map(Address::Tcp).collect()),
        scheme: Scheme::HTTP,
        authority,
        tls: None,
    }
}

/// Decimal digits only (`u16::from_str` would take `+80`), and not 0, which nothing listens on.
fn parse_port(port: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be connected to".into()),
        Ok(n) if port.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ if port.is_empty() => Err("missing port after ':'".into()),
        _ => Err(format!("invalid port {port:?}")),
    }
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`, optionally ending in a
/// dot (RFC 1123 §2.1, with `_` as used by service names).
fn is_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is an error.
fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| {
                    u8::from_str_radix(h, 16)
                        .ok()
                        .filter(|_| !h.starts_with('+'))
                })
                .ok_or_else(|| {
                    format!("bad percent-encoding at byte {i} (write a literal '%' as %25)")
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> (TargetKind, String) {
        let target = Target::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(target.scheme, Scheme::HTTP, "{t}");
        (target.kind, target.authority.to_string())
    }

    fn dns(host: &str, port: u16) -> TargetKind {
        TargetKind::Dns {
            host: host.into(),
            port,
            server: None,
        }
    }

    fn tcp(addrs: &[&str]) -> TargetKind {
        TargetKind::Static(
            addrs
                .iter()
                .map(|a| Address::Tcp(a.parse().unwrap()))
                .collect(),
        )
    }

    #[test]
    fn dns_forms() {
        for (t, kind, authority) in [
            ("localhost:8080", dns("localhost", 8080), "localhost:8080"),
            ("example.com", dns("example.com", 443), "example.com:443"),
            ("dns:///foo:1", dns("foo", 1), "foo:1"),
            ("dns:///foo", dns("foo", 443), "foo:443"),
            ("dns:foo", dns("foo", 443), "foo:443"),
            (
                "dns:foo.bar.:50051",
                dns("foo.bar.", 50051),
                "foo.bar.:50051",
            ),
            ("DNS:///svc_x.ns-1:9", dns("svc_x.ns-1", 9), "svc_x.ns-1:9"),
            ("  spaced:1  ", dns("spaced", 1), "spaced:1"),
        ] {
            assert_eq!(parse(t), (kind, authority.to_string()), "{t}");
        }
    }

    #[test]
    fn a_dns_server_authority_is_an_ip_address_and_port() {
        let with = |host: &str, port, server: &str| TargetKind::Dns {
            host: host.into(),
            port,
            server: Some(server.parse().unwrap()),
        };
        for (t, kind, authority) in [
            (
                "dns://127.0.0.1:5353/svc:7",
                with("svc", 7, "127.0.0.1:5353"),
                "svc:7",
            ),
            (
                "dns://8.8.8.8/foo",
                with("foo", 443, "8.8.8.8:53"),
                "foo:443",
            ),
            ("dns://[::1]:53/a.b:1", with("a.b", 1, "[::1]:53"), "a.b:1"),
            (
                "dns://[2001:db8::1]/a:1",
                with("a", 1, "[2001:db8::1]:53"),
                "a:1",
            ),
        ] {
            assert_eq!(parse(t), (kind, authority.to_string()), "{t}");
        }
        // An IP literal needs no DNS server.
        assert_eq!(
            parse("dns://127.0.0.1:5353/10.0.0.1:9").0,
            tcp(&["10.0.0.1:9"])
        );
    }

    #[test]
    fn ip_literals_need_no_resolver() {
        for (t, addr) in [
            ("127.0.0.1:50051", "127.0.0.1:50051"),
            ("dns:///10.0.0.1", "10.0.0.1:443"),
            ("dns:10.0.0.1:7", "10.0.0.1:7"),
            ("[::1]:9", "[::1]:9"),
            ("[::1]", "[::1]:443"),
            ("dns:///[2001:db8::1]:80", "[2001:db8::1]:80"),
            ("http://127.0.0.1:50051", "127.0.0.1:50051"),
            ("http://[::1]:8080/", "[::1]:8080"),
        ] {
            assert_eq!(parse(t), (tcp(&[addr]), addr.to_string()), "{t}");
        }
    }

    #[test]
    fn http_forms() {
        assert_eq!(
            parse("http://example.com/"),
            (dns("example.com", 80), "example.com:80".into())
        );
        assert_eq!(
            parse("HTTP://example.com:81"),
            (dns("example.com", 81), "example.com:81".into())
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn https_forms() {
        for (t, kind, authority) in [
            (
                "https://example.com",
                dns("example.com", 443),
                "example.com:443",
            ),
            (
                "HTTPS://example.com:8443/",
                dns("example.com", 8443),
                "example.com:8443",
            ),
            ("https://127.0.0.1:9", tcp(&["127.0.0.1:9"]), "127.0.0.1:9"),
            ("https://[::1]", tcp(&["[::1]:443"]), "[::1]:443"),
        ] {
            let target = Target::parse(t).unwrap();
            assert_eq!(target.scheme, Scheme::HTTPS, "{t}");
            assert_eq!(target.tls, Some(true), "{t}");
            assert_eq!(
                (target.kind, target.authority.to_string()),
                (kind, authority.into())
            );
        }
        assert_eq!(Target::parse("http://x:1").unwrap().tls, Some(false));
        assert_eq!(Target::parse("x:1").unwrap().tls, None);
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn https_needs_the_tls_feature() {
        let err = Target::parse("https://x:1").unwrap_err();
        assert!(err.message().contains("`tls` feature"), "{err}");
    }

    #[test]
    fn ip_lists() {
        for (t, addrs) in [
            ("ipv4:127.0.0.1", &["127.0.0.1:443"][..]),
            (
                "ipv4:127.0.0.1:1,10.0.0.2",
                &["127.0.0.1:1", "10.0.0.2:443"],
            ),
            ("ipv4:///1.2.3.4:5", &["1.2.3.4:5"]),
            ("ipv6:::1", &["[::1]:443"]),
            ("ipv6:[::1]:50051", &["[::1]:50051"]),
            ("ipv6:[::1]", &["[::1]:443"]),
            (
                "ipv6:[::1]:1,2001:db8::2,[fe80::1]:3",
                &["[::1]:1", "[2001:db8::2]:443", "[fe80::1]:3"],
            ),
            ("ipv6:::ffff:1.2.3.4", &["[::ffff:1.2.3.4]:443"]),
        ] {
            assert_eq!(parse(t), (tcp(addrs), addrs[0].to_string()), "{t}");
        }
    }

    #[test]
    fn unix_forms() {
        for (t, p) in [
            ("unix:/tmp/a.sock", "/tmp/a.sock"),
            ("unix:///tmp/a.sock", "/tmp/a.sock"),
            ("unix:rel.sock", "rel.sock"),
            ("unix:dir/rel.sock", "dir/rel.sock"),
            ("UNIX:/tmp/a%20b.sock", "/tmp/a b.sock"),
        ] {
            let unix = TargetKind::Static(vec![Address::Unix(PathBuf::from(p))]);
            assert_eq!(parse(t), (unix, "localhost".into()), "{t}");
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn unix_abstract_forms() {
        let max = "n".repeat(MAX_ABSTRACT_NAME);
        for (t, name) in [
            ("unix-abstract:grpc", &b"grpc"[..]),
            ("unix-abstract:a/b c", b"a/b c"),
            ("unix-abstract:%00x%FF%25", b"\0x\xff%"),
            (&format!("unix-abstract:{max}"), max.as_bytes()),
        ] {
            let kind = TargetKind::Static(vec![Address::UnixAbstract(name.to_vec())]);
            assert_eq!(parse(t), (kind, "localhost".into()), "{t}");
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn addresses_display_as_parsable_targets() {
        for address in [
            Address::UnixAbstract(b"\0weird name%\xfe".to_vec()),
            Address::Unix(PathBuf::from("/tmp/x.sock")),
        ] {
            let (kind, _) = parse(&address.to_string());
            assert_eq!(kind, TargetKind::Static(vec![address]));
        }
    }

    #[test]
    fn bad_targets_are_clear_errors() {
        let long = format!("unix-abstract:{}", "n".repeat(MAX_ABSTRACT_NAME + 1));
        for (t, problem) in [
            ("", "empty"),
            ("   ", "empty"),
            ("unix:", "missing socket path"),
            ("unix://", "absolute path"),
            ("unix://host/tmp/a.sock", "absolute path"),
            ("unix:/tmp/%zz", "percent-encoding"),
            ("unix:/tmp/100%", "percent-encoding"),
            ("unix:/tmp/a%00b", "NUL"),
            ("unix-abstract:", "missing abstract socket name"),
            (&long, "at most 107"),
            ("unix-abstract:%4", "percent-encoding"),
            ("http://", "missing host"),
            ("http:host:1", "expected http://host:port"),
            ("https:host:1", "expected https://host:port"),
            ("https://user@host:1", "user info"),
            ("https://host:1/path", "path"),
            ("http://host:1/path", "path"),
            ("http://user@host:1", "user info"),
            ("ftp://x:1", "unsupported scheme \"ftp\""),
            ("xds:///svc", "unsupported scheme"),
            ("xds:svc", "unknown scheme \"xds\""),
            ("host:notaport", "invalid port"),
            ("host:70000", "invalid port"),
            ("host:+80", "invalid port"),
            ("host:0", "port 0"),
            ("host:", "missing port"),
            (":80", "missing host"),
            ("::1:80", "brackets"),
            ("::1", "brackets"),
            ("[::1", "unclosed"),
            ("[::1]x", "expected ':' after ']'"),
            ("[::1]:", "missing port"),
            ("[foo]:80", "invalid IPv6 address"),
            ("[fe80::1%eth0]:80", "zone IDs"),
            ("a/b:1", "path"),
            ("bad_host!:1", "invalid host name"),
            ("a..b:1", "invalid host name"),
            (
                "dns://ns.example/foo:1",
                "DNS server authority \"ns.example\" must be an IP address",
            ),
            ("dns://8.8.8.8:99999/foo:1", "must be an IP address"),
            ("dns://8.8.8.8/", "missing host"),
            ("dns://foo:1", "three slashes"),
            ("dns:", "missing host"),
            ("dns:///", "missing host"),
            ("ipv4:", "missing address"),
            ("ipv4:1.2.3.4,", "empty address"),
            ("ipv4:1.2.3", "invalid IPv4 address"),
            ("ipv4:::1", "invalid IPv4 address"),
            ("ipv4:1.2.3.4:x", "invalid port"),
            ("ipv4://host/1.2.3.4", "authority is not supported"),
            ("ipv6:", "missing address"),
            ("ipv6:::1:80:x", "invalid IPv6 address"),
            ("ipv6:1.2.3.4", "invalid IPv6 address"),
            ("ipv6:[::1]:99999", "invalid port"),
            ("ipv6:[::1", "unclosed"),
        ] {
            let err = Target::parse(t).unwrap_err();
            assert_eq!(err.code(), crate::Code::InvalidArgument, "{t}");
            let expected_prefix = format!("invalid target {t:?}: ");
            assert!(err.message().starts_with(&expected_prefix), "{t}: {err}");
            assert!(err.message().contains(problem), "{t}: {err}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%2fc").unwrap(), b"a/b/c");
        assert_eq!(percent_decode("").unwrap(), b"");
        assert!(percent_decode("%+1").is_err());
        assert!(percent_decode("%").is_err());
    }
}

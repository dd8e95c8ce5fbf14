//! Resolvers: how a channel turns its target into the addresses it balances over.
//!
//! A `dns:` (or bare `host:port`, or `http://`) target with a host name gets a resolver that
//! asks the system (`getaddrinfo`) on `blocking`'s thread pool, never on the executor, or,
//! when the target names a DNS server (`dns://10.0.0.53/host:port`), one that asks that
//! server itself (see `dns.rs`). Every
//! other target names its addresses itself and gets a [`StaticResolver`]. Users can supply
//! their own [`Resolver`] to feed a channel an endpoint list from anywhere ("lookaside").

use std::collections::HashSet;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use super::dns::DnsServerResolver;
use super::target::{Target, TargetKind};
use crate::rt::BoxFuture;
use crate::status::Status;
use crate::transport::Address;

/// How often a channel re-resolves a DNS target while it is in use: grpc-go's and C-core's
/// minimum time between DNS re-resolutions is 30 s.
pub const DEFAULT_DNS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Turns a target into the addresses a channel balances over.
///
/// Implement it to supply your own endpoint list (from a service registry, a config file, a
/// lookaside load balancer). The target given to the channel still sets `:authority`.
pub trait Resolver: Send + Sync + 'static {
    /// Resolves the target to the addresses to balance over; called at channel start, when
    /// connections fail, and periodically.
    ///
    /// An error, or an empty list, fails the calls waiting for a connection; use UNAVAILABLE
    /// for a failure that may pass.
    fn resolve(&self) -> BoxFuture<Result<Vec<Address>, Status>>;
}

impl<R: Resolver + ?Sized> Resolver for Arc<R> {
    fn resolve(&self) -> BoxFuture<Result<Vec<Address>, Status>> {
        (**self).resolve()
    }
}

/// A resolver that always answers with the same addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticResolver(Vec<Address>);

impl StaticResolver {
    /// A resolver answering `addresses`, in this order.
    pub fn new(addresses: impl IntoIterator<Item = Address>) -> StaticResolver {
        StaticResolver(addresses.into_iter().collect())
    }

    /// The addresses it answers.
    pub fn addresses(&self) -> &[Address] {
        &self.0
    }
}

impl Resolver for StaticResolver {
    fn resolve(&self) -> BoxFuture<Result<Vec<Address>, Status>> {
        let addresses = self.0.clone();
        Box::pin(async move { Ok(addresses) })
    }
}

/// Resolves a host name with the system resolver, on `blocking`'s thread pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsResolver {
    host: String,
    port: u16,
}

impl DnsResolver {
    /// A resolver for `host`, giving every address `port`.
    pub(crate) fn new(host: impl Into<String>, port: u16) -> DnsResolver {
        DnsResolver {
            host: host.into(),
            port,
        }
    }
}

impl Resolver for DnsResolver {
    /// Every address the system returns, IPv4 and IPv6, duplicates removed, in its order
    /// (which follows RFC 6724's preferences). Failure and an empty answer are UNAVAILABLE.
    fn resolve(&self) -> BoxFuture<Result<Vec<Address>, Status>> {
        let DnsResolver { host, port } = self.clone();
        Box::pin(async move {
            // getaddrinfo blocks, for seconds when a DNS server is slow: keep it off the
            // executor's threads.
            let lookup = {
                let host = host.clone();
                blocking::unblock(move || {
                    (host.as_str(), port)
                        .to_socket_addrs()
                        .map(Iterator::collect::<Vec<_>>)
                })
            };
            let found = lookup.await.map_err(|err| {
                Status::unavailable(format!("DNS resolution of {host} failed: {err}"))
            })?;
            let mut seen = HashSet::with_capacity(found.len());
            let addresses: Vec<Address> = found
                .into_iter()
                .filter(|addr| seen.insert(*addr))
                .map(Address::Tcp)
                .collect();
            if addresses.is_empty() {
                return Err(Status::unavailable(format!(
                    "DNS resolution of {host} failed: no addresses"
                )));
            }
            Ok(addresses)
        })
    }
}

/// The resolver a target implies: DNS for host names, static for everything else.
pub(crate) fn resolver_for(target: &Target) -> Arc<dyn Resolver> {
    match &target.kind {
        TargetKind::Dns {
            host,
            port,
            server: None,
        } => Arc::new(DnsResolver::new(host.clone(), *port)),
        TargetKind::Dns {
            host,
            port,
            server: Some(server),
        } => Arc::new(DnsServerResolver::new(*server, host.clone(), *port)),
        TargetKind::Static(addresses) => Arc::new(StaticResolver(addresses.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_targets_resolve_to_their_addresses() {
        let target = Target::parse("ipv4:127.0.0.1:1,10.0.0.1:2").unwrap();
        let addresses = smol::block_on(resolver_for(&target).resolve()).unwrap();
        assert_eq!(
            addresses,
            [
                Address::Tcp("127.0.0.1:1".parse().unwrap()),
                Address::Tcp("10.0.0.1:2".parse().unwrap()),
            ]
        );
        let unix = Target::parse("unix:///tmp/x.sock").unwrap();
        let addresses = smol::block_on(resolver_for(&unix).resolve()).unwrap();
        assert_eq!(addresses, [Address::Unix("/tmp/x.sock".into())]);
    }

    #[test]
    fn localhost_resolves_to_loopback_without_duplicates() {
        let target = Target::parse("dns:///localhost:50051").unwrap();
        let addresses = smol::block_on(resolver_for(&target).resolve()).unwrap();
        assert!(!addresses.is_empty());
        let unique: HashSet<_> = addresses.iter().collect();
        assert_eq!(unique.len(), addresses.len(), "{addresses:?}");
        for address in &addresses {
            match address {
                Address::Tcp(addr) => {
                    assert!(addr.ip().is_loopback(), "{addr}");
                    assert_eq!(addr.port(), 50051);
                }
                other => panic!("not TCP: {other}"),
            }
        }
    }

    #[test]
    fn an_arc_is_a_resolver_too() {
        let shared = Arc::new(StaticResolver::new([Address::Unix("/s".into())]));
        let addresses = smol::block_on(Resolver::resolve(&shared)).unwrap();
        assert_eq!(addresses, shared.addresses());
    }
}

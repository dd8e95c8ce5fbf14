//! A DNS stub resolver for targets that name their DNS server (`dns://10.0.0.53/host:port`):
//! it asks that server, not the system's, for the host's A and AAAA records (RFC 1035), over
//! UDP, and over TCP when the UDP answer comes back truncated (RFC 7766).
//!
//! The server is expected to recurse (the query sets RD), as any resolver a client is pointed
//! at does; the answer section's addresses are taken whatever name owns them, so a CNAME
//! chain the server followed is fine. TTLs are not honoured: the channel re-resolves on its
//! own schedule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use async_io::{Async, Timer};
use futures_util::future::{Either, join, select};
use futures_util::{AsyncReadExt, AsyncWriteExt};

use super::resolve::Resolver;
use crate::rt::BoxFuture;
use crate::status::Status;
use crate::transport::Address;

/// Record types asked for.
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
/// The Internet class.
const CLASS_IN: u16 = 1;
/// How long one UDP try waits for its answer; tries double it.
const FIRST_TRY_TIMEOUT: Duration = Duration::from_millis(500);
/// UDP tries per query before giving up.
const UDP_TRIES: u32 = 3;
/// How long a TCP query may take in all.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest UDP answer we read (RFC 6891's common EDNS size; we send no OPT record, so
/// servers stay within 512 bytes, but a larger datagram is read whole rather than cut).
const UDP_BUFFER: usize = 4096;

/// Resolves `host` by asking the DNS server at `server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsServerResolver {
    server: SocketAddr,
    host: String,
    port: u16,
}

impl DnsServerResolver {
    /// A resolver of `host` (a DNS name) at `server`, giving every address `port`.
    pub(crate) fn new(server: SocketAddr, host: impl Into<String>, port: u16) -> Self {
        DnsServerResolver {
            server,
            host: host.into(),
            port,
        }
    }
}

impl Resolver for DnsServerResolver {
    /// The A records' addresses, then the AAAA records', duplicates removed. No address at
    /// all (the name does not exist, has neither record, or the server failed) is UNAVAILABLE
    /// naming the server and what it said.
    fn resolve(&self) -> BoxFuture<Result<Vec<Address>, Status>> {
        let this = self.clone();
        Box::pin(async move {
            let (v4, v6) = join(
                this.query_addresses(TYPE_A),
                this.query_addresses(TYPE_AAAA),
            )
            .await;
            let mut addresses = Vec::new();
            let mut errors = Vec::new();
            for result in [v4, v6] {
                match result {
                    Ok(ips) => {
                        for ip in ips {
                            let address = Address::Tcp(SocketAddr::new(ip, this.port));
                            if !addresses.contains(&address) {
                                addresses.push(address);
                            }
                        }
                    }
                    Err(why) => errors.push(why),
                }
            }
            if !addresses.is_empty() {
                return Ok(addresses);
            }
            errors.dedup();
            let why = match errors.is_empty() {
                true => "no A or AAAA records".to_string(),
                false => errors.join("; "),
            };
            Err(Status::unavailable(format!(
                "DNS resolution of {} at {} failed: {why}",
                this.host, this.server
            )))
        })
    }
}

impl DnsServerResolver {
    /// The addresses of the records of `rtype` for the host.
    async fn query_addresses(&self, rtype: u16) -> Result<Vec<IpAddr>, String> {
        let id = fastrand::u16(..);
        let query = encode_query(id, &self.host, rtype)?;
        let answer = match self.over_udp(id, &query).await? {
            Some(answer) => answer,
            None => self.over_tcp(&query).await?,
        };
        let parsed = parse_answer(&answer, id, rtype)?;
        match parsed.rcode {
            0 => Ok(parsed.addresses),
            3 => Err("the name does not exist (NXDOMAIN)".into()),
            2 => Err("the server failed (SERVFAIL)".into()),
            5 => Err("the server refused the query (REFUSED)".into()),
            code => Err(format!("the server answered with error code {code}")),
        }
    }

    /// The answer over UDP, or `None` when it came back truncated.
    async fn over_udp(&self, id: u16, query: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let local: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = Async::<UdpSocket>::bind(local).map_err(|e| format!("UDP socket: {e}"))?;
        socket
            .get_ref()
            .connect(self.server)
            .map_err(|e| format!("UDP connect: {e}"))?;
        let mut buf = vec![0u8; UDP_BUFFER];
        let mut wait = FIRST_TRY_TIMEOUT;
        for _ in 0..UDP_TRIES {
            socket
                .send(query)
                .await
                .map_err(|e| format!("sending the query: {e}"))?;
            let deadline = Timer::after(wait);
            let mut deadline = std::pin::pin!(deadline);
            loop {
                let outcome = {
                    let received = std::pin::pin!(socket.recv(&mut buf));
                    match select(received, deadline.as_mut()).await {
                        Either::Left((received, _)) => Either::Left(received),
                        Either::Right(_) => Either::Right(()),
                    }
                };
                match outcome {
                    Either::Left(Ok(n)) => {
                        let answer = &buf[..n];
                        // Not ours (a late answer to an earlier try has our id too, and is
                        // as good): keep waiting.
                        if answer.len() < 12 || u16::from_be_bytes([answer[0], answer[1]]) != id {
                            continue;
                        }
                        let truncated = answer[2] & 0x02 != 0;
                        return Ok((!truncated).then(|| answer.to_vec()));
                    }
                    // ICMP port unreachable: no server listens there.
                    Either::Left(Err(e)) => return Err(format!("no answer: {e}")),
                    Either::Right(_) => break,
                }
            }
            wait *= 2;
        }
        Err(format!("no answer after {UDP_TRIES} tries"))
    }

    /// The answer over TCP (two-byte length prefixes).
    async fn over_tcp(&self, query: &[u8]) -> Result<Vec<u8>, String> {
        let exchange = async {
            let mut stream = Async::<std::net::TcpStream>::connect(self.server)
                .await
                .map_err(|e| format!("TCP connect: {e}"))?;
            let len = u16::try_from(query.len()).map_err(|_| "query too long".to_string())?;
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(query);
            stream
                .write_all(&framed)
                .await
                .map_err(|e| format!("TCP send: {e}"))?;
            let mut len = [0u8; 2];
            stream
                .read_exact(&mut len)
                .await
                .map_err(|e| format!("TCP answer: {e}"))?;
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream
                .read_exact(&mut answer)
                .await
                .map_err(|e| format!("TCP answer: {e}"))?;
            Ok(answer)
        };
        let timeout = Timer::after(TCP_TIMEOUT);
        match select(std::pin::pin!(exchange), std::pin::pin!(timeout)).await {
            Either::Left((result, _)) => result,
            Either::Right(_) => Err("no answer over TCP".into()),
        }
    }
}

/// A standard query with recursion desired for `name`'s records of `rtype`.
fn encode_query(id: u16, name: &str, rtype: u16) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(18 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00]); // RD
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} is not a DNS name"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a DNS name (label {label:?})"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// What an answer said.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    rcode: u8,
    addresses: Vec<IpAddr>,
}

/// Parses a response to query `id` for `rtype`; a malformed one is an error naming what is
/// wrong.
fn parse_answer(msg: &[u8], id: u16, rtype: u16) -> Result<Answer, String> {
    let malformed = |what: &str| format!("malformed answer ({what})");
    if msg.len() < 12 {
        return Err(malformed("shorter than its header"));
    }
    let field = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    if field(0) != id || msg[2] & 0x80 == 0 {
        return Err(malformed("not a response to the query"));
    }
    let rcode = msg[3] & 0x0F;
    let (questions, answers) = (field(4), field(6));
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at).ok_or_else(|| malformed("question name"))?;
        at = at
            .checked_add(4)
            .filter(|&end| end <= msg.len())
            .ok_or_else(|| malformed("question"))?;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at).ok_or_else(|| malformed("record name"))?;
        let header = msg
            .get(at..at + 10)
            .ok_or_else(|| malformed("record header"))?;
        let (kind, class) = (
            u16::from_be_bytes([header[0], header[1]]),
            u16::from_be_bytes([header[2], header[3]]),
        );
        let len = usize::from(u16::from_be_bytes([header[8], header[9]]));
        let data = msg
            .get(at + 10..at + 10 + len)
            .ok_or_else(|| malformed("record data"))?;
        at += 10 + len;
        if class != CLASS_IN || kind != rtype {
            continue;
        }
        let ip = match (kind, data.len()) {
            (TYPE_A, 4) => IpAddr::from(<[u8; 4]>::try_from(data).expect("4 bytes")),
            (TYPE_AAAA, 16) => IpAddr::from(<[u8; 16]>::try_from(data).expect("16 bytes")),
            _ => return Err(malformed("address record of the wrong length")),
        };
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    Ok(Answer { rcode, addresses })
}

/// The offset just past the (possibly compressed) name at `at`, or `None` if it runs off the
/// message.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(len),
            // A pointer ends the name where it stands.
            0xC0 => return (at + 2 <= msg.len()).then_some(at + 2),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `query` with `records` (type, data), each owned by a pointer to the
    /// question's name.
    fn answer(query: &[u8], rcode: u8, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut msg = query.to_vec();
        msg[2] |= 0x80;
        msg[3] = (msg[3] & 0xF0) | rcode;
        msg[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (kind, data) in records {
            msg.extend_from_slice(&[0xC0, 12]);
            msg.extend_from_slice(&kind.to_be_bytes());
            msg.extend_from_slice(&CLASS_IN.to_be_bytes());
            msg.extend_from_slice(&30u32.to_be_bytes());
            msg.extend_from_slice(&(data.len() as u16).to_be_bytes());
            msg.extend_from_slice(data);
        }
        msg
    }

    #[test]
    fn queries_are_encoded_as_rfc_1035_says() {
        let query = encode_query(0xABCD, "svc.test.", TYPE_A).unwrap();
        assert_eq!(
            query,
            [
                0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b's', b'v', b'c', 4, b't', b'e', b's',
                b't', 0, 0, 1, 0, 1
            ]
        );
        for bad in ["", ".", "a..b", &"x".repeat(64), &"ab.".repeat(85)] {
            assert!(encode_query(1, bad, TYPE_A).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_give_their_addresses_of_the_type_asked() {
        let query = encode_query(7, "svc.test", TYPE_A).unwrap();
        let cname: &[u8] = &[3, b'f', b'o', b'o', 0];
        let msg = answer(
            &query,
            0,
            &[
                (5, cname),
                (TYPE_A, &[127, 0, 0, 1]),
                (TYPE_A, &[127, 0, 0, 2]),
                (TYPE_A, &[127, 0, 0, 1]),
            ],
        );
        let parsed = parse_answer(&msg, 7, TYPE_A).unwrap();
        assert_eq!(parsed.rcode, 0);
        assert_eq!(
            parsed.addresses,
            [
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "127.0.0.2".parse().unwrap()
            ]
        );
        let six = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let msg = answer(&query, 0, &[(TYPE_AAAA, &six)]);
        assert_eq!(
            parse_answer(&msg, 7, TYPE_AAAA).unwrap().addresses,
            ["::1".parse::<IpAddr>().unwrap()]
        );
        let nx = answer(&query, 3, &[]);
        assert_eq!(parse_answer(&nx, 7, TYPE_A).unwrap().rcode, 3);
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let query = encode_query(7, "svc.test", TYPE_A).unwrap();
        let good = answer(&query, 0, &[(TYPE_A, &[10, 0, 0, 1])]);
        // Every truncation of a good answer, and every single-byte corruption, parses or
        // fails cleanly.
        for len in 0..good.len() {
            let _ = parse_answer(&good[..len], 7, TYPE_A);
        }
        for i in 0..good.len() {
            for value in [0x00, 0x3F, 0xC0, 0xFF] {
                let mut bad = good.clone();
                bad[i] = value;
                let _ = parse_answer(&bad, 7, TYPE_A);
            }
        }
        assert!(
            parse_answer(&good, 8, TYPE_A)
                .unwrap_err()
                .contains("not a response")
        );
        let short = answer(&query, 0, &[(TYPE_A, &[10, 0, 1])]);
        assert!(
            parse_answer(&short, 7, TYPE_A)
                .unwrap_err()
                .contains("wrong length")
        );
    }

    #[test]
    fn a_server_that_is_not_there_is_unavailable_with_the_reason() {
        // Nothing listens on this UDP port: the query fails (refused, or no answer after the
        // tries), as UNAVAILABLE naming the server.
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = socket.local_addr().unwrap();
        drop(socket);
        let resolver = DnsServerResolver::new(server, "svc.test", 80);
        let status = smol::block_on(resolver.resolve()).unwrap_err();
        assert_eq!(status.code(), crate::Code::Unavailable);
        assert!(
            status.message().contains(&server.to_string()),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_udp_server_is_asked_and_its_addresses_used() {
        // A one-shot server answering both queries: A with two addresses, AAAA with none.
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            // Every query is answered (a busy machine may make the client try again).
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let Ok((n, from)) = server.recv_from(&mut buf) else {
                    continue;
                };
                let query = &buf[..n];
                let rtype = u16::from_be_bytes([query[n - 4], query[n - 3]]);
                let reply = match rtype {
                    TYPE_A => answer(
                        query,
                        0,
                        &[(TYPE_A, &[127, 0, 0, 2]), (TYPE_A, &[127, 0, 0, 3])],
                    ),
                    _ => answer(query, 0, &[]),
                };
                server.send_to(&reply, from).unwrap();
            }
        });
        let resolver = DnsServerResolver::new(address, "svc.test", 8080);
        let addresses = smol::block_on(resolver.resolve()).unwrap();
        done.store(true, std::sync::atomic::Ordering::Release);
        thread.join().unwrap();
        assert_eq!(
            addresses,
            [
                Address::Tcp("127.0.0.2:8080".parse().unwrap()),
                Address::Tcp("127.0.0.3:8080".parse().unwrap())
            ]
        );
    }
}

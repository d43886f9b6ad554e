//! The client's address behind reverse proxies (`--trusted-proxy`). A proxy appends the address
//! it received a request from to `X-Forwarded-For` (or `Forwarded: for=`), so the header lists
//! every hop, the client first. Anyone can write that header, so only hops added by trusted
//! proxies count: when the direct peer is trusted, the list is walked from the right, past
//! every trusted address, and the first address that is not trusted is the client. Whatever
//! the client itself wrote is to the left of that point and never read.
//!
//! `X-Forwarded-For` is what nginx, Caddy, Traefik, HAProxy and Envoy write; `Forwarded`
//! (RFC 7239) is read only when a request has no `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// One hop as a proxy wrote it; `None` when it names no usable address (`unknown`, an
/// obfuscated identifier, garbage).
type Hop = Option<SocketAddr>;

/// The address of the client behind `peer`: `peer` itself unless it is in `trusted`, else the
/// rightmost forwarded hop that is not (port 0 when the header gives none).
pub(crate) fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> SocketAddr {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if !is_trusted(peer.ip(), trusted) {
        return peer;
    }
    let hops = if headers.contains_key("x-forwarded-for") {
        x_forwarded_for(headers)
    } else {
        forwarded(headers)
    };
    walk(peer, &hops, trusted)
}

/// Walks `hops` from the right: the first untrusted address is the client. An unusable hop
/// stops the walk at the last trusted address seen; when every hop is trusted, the leftmost is
/// the client.
fn walk(peer: SocketAddr, hops: &[Hop], trusted: &[IpNet]) -> SocketAddr {
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(addr) if is_trusted(addr.ip(), trusted) => nearest = *addr,
            Some(addr) => return *addr,
            None => return nearest,
        }
    }
    nearest
}

/// Whether `ip` is in one of the `trusted` ranges.
fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The hops of every `X-Forwarded-For` header, in order.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Hop> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        match value.to_str() {
            Ok(list) => hops.extend(list.split(',').map(node)),
            Err(_) => hops.push(None),
        }
    }
    hops
}

/// The `for=` hops of every `Forwarded` header, in order (an element without `for` is an
/// unusable hop).
fn forwarded(headers: &HeaderMap) -> Vec<Hop> {
    let mut hops = Vec::new();
    for value in headers.get_all("forwarded") {
        let Ok(list) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in list.split(',') {
            let hop = element.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim().eq_ignore_ascii_case("for").then_some(value)
            });
            hops.push(hop.and_then(node));
        }
    }
    hops
}

/// One node as proxies write it: `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, optionally in double quotes.
fn node(s: &str) -> Hop {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip.to_canonical(), 0));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()));
    }
    let ip = s
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<IpAddr>()
        .ok()?;
    Some(SocketAddr::new(ip.to_canonical(), 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("cidr")).collect()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        h
    }

    fn client(peer: &str, pairs: &[(&'static str, &str)], trusted: &[&str]) -> String {
        let peer: SocketAddr = peer.parse().expect("peer");
        client_addr(peer, &headers(pairs), &nets(trusted)).to_string()
    }

    /// Without trusted proxies, or from an untrusted peer, the headers are ignored.
    #[test]
    fn headers_count_only_from_trusted_peers() {
        let xff = [("x-forwarded-for", "198.51.100.1")];
        assert_eq!(client("10.0.0.1:5000", &xff, &[]), "10.0.0.1:5000");
        assert_eq!(
            client("192.0.2.9:5000", &xff, &["10.0.0.0/8"]),
            "192.0.2.9:5000"
        );
        assert_eq!(
            client("10.0.0.1:5000", &xff, &["10.0.0.0/8"]),
            "198.51.100.1:0"
        );
    }

    /// The rightmost untrusted hop wins, so whatever a client wrote itself is skipped; chains
    /// of trusted proxies are walked past.
    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop() {
        let trusted = ["10.0.0.0/8", "127.0.0.1/32"];
        let forged = [("x-forwarded-for", "1.1.1.1, 198.51.100.1, 10.0.0.2")];
        assert_eq!(client("127.0.0.1:1", &forged, &trusted), "198.51.100.1:0");
        // Several header lines are one list.
        let split = [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.1, 10.0.0.2"),
        ];
        assert_eq!(client("127.0.0.1:1", &split, &trusted), "198.51.100.1:0");
        // Every hop trusted: the leftmost is the client.
        let inside = [("x-forwarded-for", "10.1.1.1, 10.0.0.2")];
        assert_eq!(client("127.0.0.1:1", &inside, &trusted), "10.1.1.1:0");
        // An unusable hop stops the walk at the last trusted one.
        let garbage = [("x-forwarded-for", "198.51.100.1, nonsense, 10.0.0.2")];
        assert_eq!(client("127.0.0.1:1", &garbage, &trusted), "10.0.0.2:0");
        // No header at all: the proxy itself.
        assert_eq!(client("127.0.0.1:1", &[], &trusted), "127.0.0.1:1");
    }

    /// `Forwarded` is read when there is no `X-Forwarded-For`: quoted IPv6 with ports,
    /// several elements, `unknown`.
    #[test]
    fn forwarded_is_read_without_x_forwarded_for() {
        let trusted = ["127.0.0.0/8"];
        let h = [(
            "forwarded",
            r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711";by=127.0.0.1"#,
        )];
        assert_eq!(
            client("127.0.0.1:1", &h, &trusted),
            "[2001:db8:cafe::17]:4711"
        );
        let unknown = [("forwarded", "for=192.0.2.60, for=unknown")];
        assert_eq!(client("127.0.0.1:1", &unknown, &trusted), "127.0.0.1:1");
        let both = [
            ("forwarded", "for=192.0.2.60"),
            ("x-forwarded-for", "198.51.100.1"),
        ];
        assert_eq!(client("127.0.0.1:1", &both, &trusted), "198.51.100.1:0");
    }

    /// IPv4 peers seen on an IPv6 socket (`::ffff:a.b.c.d`) match IPv4 ranges.
    #[test]
    fn mapped_addresses_match_ipv4_ranges() {
        let xff = [("x-forwarded-for", "198.51.100.1")];
        assert_eq!(
            client("[::ffff:127.0.0.1]:1", &xff, &["127.0.0.0/8"]),
            "198.51.100.1:0"
        );
        assert_eq!(node("[::1]"), Some("[::1]:0".parse().expect("addr")));
    }
}

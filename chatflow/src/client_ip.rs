//! The client's address: the peer, or X-Forwarded-For when the peer is a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;

/// Resolves the client address of a request.
///
/// X-Forwarded-For is read right to left, skipping trusted proxies, because only the entries
/// our own proxies appended can be believed; anything further left is client-supplied.
pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !trusted.contains(&peer_ip) {
        return peer_ip;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let peer = SocketAddr::new(proxy, 5000);
        let untrusted = SocketAddr::new("203.0.113.9".parse().unwrap(), 5000);
        let h = headers("198.51.100.7, 10.0.0.1");
        assert_eq!(
            resolve(untrusted, &h, &[proxy]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolve(peer, &h, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // A spoofed left-most entry does not win over the hop our proxy saw.
        let h = headers("1.1.1.1, 198.51.100.7");
        assert_eq!(
            resolve(peer, &h, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolve(peer, &HeaderMap::new(), &[proxy]), proxy);
    }
}

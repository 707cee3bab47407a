//! Which addresses to advertise as ICE host candidates: the machine's own addresses on the shared
//! UDP port (or just the bound one), then the configured additional hosts (NAT 1:1, port
//! forwarding). No STUN: on a private network the host candidates are enough, and the answer is
//! never held up waiting for a server that is not there.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use tracing::warn;

/// `interfaces` are the machine's addresses (loopback included); the result keeps the order of
/// preference: LAN addresses, then additional hosts, then loopback (a kiosk on the same box).
pub(crate) fn advertised(
    bound: SocketAddr,
    interfaces: &[IpAddr],
    additional_hosts: &[String],
) -> Vec<SocketAddr> {
    let port = bound.port();
    let mut out: Vec<SocketAddr> = Vec::new();
    let push = |ip: IpAddr, out: &mut Vec<SocketAddr>| {
        let addr = SocketAddr::new(ip, port);
        if !out.contains(&addr) {
            out.push(addr);
        }
    };
    let local: Vec<IpAddr> = if bound.ip().is_unspecified() {
        interfaces
            .iter()
            .copied()
            .filter(|ip| ip.is_ipv4() == bound.is_ipv4() && !is_link_local(ip))
            .collect()
    } else {
        vec![bound.ip()]
    };
    for ip in local.iter().filter(|ip| !ip.is_loopback()) {
        push(*ip, &mut out);
    }
    for host in additional_hosts {
        match host.parse::<IpAddr>() {
            Ok(ip) => push(ip, &mut out),
            Err(_) => match (host.as_str(), port).to_socket_addrs() {
                Ok(resolved) => {
                    for addr in resolved.filter(|a| a.is_ipv4()) {
                        push(addr.ip(), &mut out);
                    }
                }
                Err(err) => warn!(%host, %err, "cannot resolve additional host; not advertised"),
            },
        }
    }
    for ip in local.iter().filter(|ip| ip.is_loopback()) {
        push(*ip, &mut out);
    }
    out
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => ip.is_link_local(),
        IpAddr::V6(ip) => (ip.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The machine's interface addresses now.
pub(crate) fn interface_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.into_iter().map(|i| i.ip()).collect(),
        Err(err) => {
            warn!(%err, "cannot list network interfaces; advertising loopback only");
            vec![IpAddr::from([127, 0, 0, 1])]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn wildcard_advertises_lan_then_additional_then_loopback() {
        let got = advertised(
            "0.0.0.0:8189".parse().unwrap(),
            &ips(&["127.0.0.1", "192.168.1.20", "169.254.3.3", "fe80::1"]),
            &["203.0.113.7".into()],
        );
        let want: Vec<SocketAddr> = ["192.168.1.20:8189", "203.0.113.7:8189", "127.0.0.1:8189"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_specific_address_is_the_only_local_one() {
        let got = advertised(
            "127.0.0.1:40000".parse().unwrap(),
            &ips(&["127.0.0.1", "10.0.0.2"]),
            &[],
        );
        assert_eq!(got, vec!["127.0.0.1:40000".parse::<SocketAddr>().unwrap()]);
    }
}

//! The local address a viewer's UDP socket binds: the one this machine would use to reach the
//! server, so that the viewer's host candidate is one the server can answer. A loopback server
//! gets a loopback candidate (the `webrtc` crate leaves loopback out when it expands a wildcard).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, anyhow};
use reqwest::Url;
use tokio::net::UdpSocket;

/// The local IP towards the server of `url`.
pub(crate) async fn towards(url: &Url) -> anyhow::Result<IpAddr> {
    let server = resolve(url).await?;
    if server.ip().is_loopback() {
        return Ok(server.ip());
    }
    // Connecting a UDP socket sends nothing; it only asks the kernel for the route.
    let unspecified: IpAddr = if server.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let probe = UdpSocket::bind((unspecified, 0)).await?;
    probe
        .connect(server)
        .await
        .with_context(|| format!("no route to {server}"))?;
    Ok(probe.local_addr()?.ip())
}

/// The server's address; IPv4 first when a name has both (`localhost`): the daemon's shipped
/// default listens on IPv4.
async fn resolve(url: &Url) -> anyhow::Result<SocketAddr> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    // IPv6 literals come bracketed.
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .collect();
    addresses
        .iter()
        .find(|address| address.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
        .ok_or_else(|| anyhow!("{host} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_servers_get_a_loopback_address() {
        let ip = |url: &str| {
            let url = Url::parse(url).expect("url");
            async move { towards(&url).await.expect("local address") }
        };
        assert_eq!(
            ip("http://127.0.0.1:8889/test/whep").await,
            Ipv4Addr::LOCALHOST
        );
        assert_eq!(
            ip("http://localhost:8889/test/whep").await,
            Ipv4Addr::LOCALHOST
        );
        assert_eq!(
            ip("http://127.0.0.5:8889/test/whep").await,
            Ipv4Addr::new(127, 0, 0, 5)
        );
    }
}

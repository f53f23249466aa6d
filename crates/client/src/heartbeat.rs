//! The agent's liveness heartbeats (see `vipcast_api::heartbeat`).

use std::time::Duration;

/// Sends a liveness heartbeat for `chassis` every `every` until `shutdown`
/// resolves (UDP to the controller's host and port number). With `key`
/// (the chassis' heartbeat key) each is signed, and the sequence starts at
/// the clock in microseconds so that it keeps growing across restarts. The
/// address is resolved again after a send error, so a controller that
/// moved is found.
pub async fn heartbeats(
    controller: String,
    chassis: String,
    every: Duration,
    key: Option<[u8; vipcast_tls::heartbeat::LEN]>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    tokio::select! {
        () = send_forever(&controller, &chassis, every, key) => {}
        () = &mut shutdown => {}
    }
}

async fn send_forever(
    controller: &str,
    chassis: &str,
    every: Duration,
    key: Option<[u8; vipcast_tls::heartbeat::LEN]>,
) {
    let target = match reqwest::Url::parse(controller) {
        Ok(u) => match (u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()), u.port_or_known_default()) {
            (Some(h), Some(p)) => (h, p),
            _ => {
                tracing::error!(controller, "no host and port in the controller URL: no heartbeats");
                return std::future::pending().await;
            }
        },
        Err(e) => {
            tracing::error!(controller, error = %e, "bad controller URL: no heartbeats");
            return std::future::pending().await;
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    'connect: loop {
        let sock = async {
            let addr = tokio::net::lookup_host((target.0.as_str(), target.1))
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other("no address"))?;
            let any: std::net::SocketAddr =
                if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
            let s = tokio::net::UdpSocket::bind(any).await?;
            s.connect(addr).await?;
            Ok::<_, std::io::Error>(s)
        }
        .await;
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat socket; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            tick.tick().await;
            // Signed: the clock in µs (the controller refuses sequences far
            // from its own clock), never below the last one plus one.
            seq = match key {
                Some(_) => (seq + 1).max(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_micros() as u64)
                        .unwrap_or(0),
                ),
                None => seq + 1,
            };
            let datagram = match &key {
                Some(k) => vipcast_api::heartbeat::encode_signed(chassis, seq, |m| vipcast_tls::heartbeat::sign(k, m)),
                None => vipcast_api::heartbeat::encode_heartbeat(chassis, seq),
            };
            if let Err(e) = sock.send(&datagram).await {
                // ICMP unreachable (controller restarting) shows up here: go on.
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    tracing::warn!(error = %e, "sending a heartbeat");
                    continue 'connect;
                }
            }
        }
    }
}

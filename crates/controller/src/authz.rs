//! Who may do what: the identity of the TLS peer (nothing else) against the
//! endpoint, and for the calls agents and replicators make, against what
//! the body claims and the current state. Pure: a request's method, path
//! and body and the state in, a verdict out.
//!
//! | role | may |
//! |---|---|
//! | `admin` | everything |
//! | `viewer` | every `GET`, nothing else |
//! | `agent` *N* | `PUT /v1/chassis/N`; its own view and watch stream; claims (`source: agent`) as chassis *N* with the MAC of a port bound to *N* (or a VRRP virtual MAC for a VIP with a member on *N*); VRRP reports for masters on *N*; assist records by *N* in a VPC it has ports in |
//! | `replicator` *R* | `PUT /v1/replicators/R`; its own watch stream and the replicators' view; claims with `source: replicator` and VRRP reports, only for VPCs in replicator mode |
//! | `controller`, anyone else | nothing |
//!
//! `/healthz` and `/readyz` need no certificate; every other request without
//! one is answered 401.

use serde::Deserialize;
use vipcast_api::{Identity, PeerRole};
use vipcast_model::{BumMode, ClaimSource, State};
use vipcast_packet::MacAddr;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// 401 (no identity) or 403.
    pub status: u16,
    /// A closed set, for the metric's `reason` label.
    pub reason: &'static str,
    pub message: String,
}

impl Denied {
    fn forbidden(reason: &'static str, message: impl Into<String>) -> Denied {
        Denied { status: 403, reason, message: message.into() }
    }
}

/// Endpoints that need no certificate.
pub fn is_open(method: &str, path: &str) -> bool {
    method == "GET" && matches!(path, "/healthz" | "/readyz")
}

/// The parts of bodies the rules look at (the handlers validate the rest).
#[derive(Debug, Default, Deserialize)]
struct Fields {
    chassis: Option<String>,
    mac: Option<MacAddr>,
    source: Option<ClaimSource>,
    vpc: Option<String>,
    master_mac: Option<MacAddr>,
    by: Option<String>,
}

/// Decides a request by `id` (`None`: no client certificate).
pub fn authorize(id: Option<&Identity>, method: &str, path: &str, body: &[u8], state: &State) -> Result<(), Denied> {
    if is_open(method, path) {
        return Ok(());
    }
    let Some(id) = id else {
        return Err(Denied {
            status: 401,
            reason: "no_certificate",
            message: "a client certificate is required".into(),
        });
    };
    let read = matches!(method, "GET" | "HEAD");
    match id.role {
        PeerRole::Admin => return Ok(()),
        PeerRole::Viewer if read => return Ok(()),
        PeerRole::Viewer => return Err(Denied::forbidden("read_only", format!("viewer:{} may only read", id.name))),
        PeerRole::Controller => return Err(Denied::forbidden("role", "a controller certificate is not a client's")),
        PeerRole::Agent | PeerRole::Replicator => {}
    }
    // Decided on the segments as the handlers will see them: `%2D` is `-`
    // to the router's path extractor, so it must be here too.
    let Some(decoded) = path.trim_start_matches('/').split('/').map(percent_decode).collect::<Option<Vec<String>>>()
    else {
        return Err(Denied::forbidden("role", "the path is not valid percent-encoded UTF-8"));
    };
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    if id.role == PeerRole::Agent {
        agent(&id.name, method, &segs, body, state)
    } else {
        replicator(&id.name, method, &segs, body, state)
    }
}

/// A path segment with its `%XX` escapes decoded; `None` if an escape is
/// malformed or the result is not UTF-8.
fn percent_decode(seg: &str) -> Option<String> {
    if !seg.contains('%') {
        return Some(seg.to_string());
    }
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn fields(body: &[u8]) -> Result<Fields, Denied> {
    // Malformed bodies are the handler's to refuse (with the field at
    // fault); an unreadable body grants nothing here.
    serde_json::from_slice(body).or_else(|_| Ok(Fields::default()))
}

fn agent(me: &str, method: &str, segs: &[&str], body: &[u8], state: &State) -> Result<(), Denied> {
    let not_own = |what: &str| Denied::forbidden("not_own", format!("agent:{me} may not {what}"));
    match (method, segs) {
        ("PUT", ["v1", "chassis", name]) if *name == me => Ok(()),
        ("PUT", ["v1", "chassis", name]) => Err(not_own(&format!("register chassis {name}"))),
        ("GET", ["v1", "views" | "watch", "chassis", name]) if *name == me => Ok(()),
        ("GET", ["v1", "views" | "watch", "chassis", name]) => Err(not_own(&format!("read chassis {name}'s objects"))),
        ("POST", ["v1", "vips", vip, "claims"]) => {
            let f = fields(body)?;
            if f.chassis.as_deref() != Some(me) {
                return Err(not_own("claim in another chassis' name"));
            }
            if f.source.is_some_and(|s| s != ClaimSource::Agent) {
                return Err(Denied::forbidden("source", format!("agent:{me} claims only with source agent")));
            }
            let Some(mac) = f.mac else { return Ok(()) };
            let mine = || state.index().chassis_ports(me).iter().filter_map(|p| state.ports.get(p));
            let bound = mine().any(|p| p.mac == mac);
            let virtual_for_member = mac.vrrp_vrid().is_some()
                && state.vips.get(*vip).is_some_and(|v| {
                    v.spec.members.iter().any(|m| state.ports.get(m).is_some_and(|p| p.chassis == me))
                });
            if bound || virtual_for_member {
                Ok(())
            } else {
                Err(Denied::forbidden(
                    "not_own_port",
                    format!("agent:{me} may claim only with the MAC of a port bound to it ({mac} is not)"),
                ))
            }
        }
        ("POST", ["v1", "vrrp"]) => {
            let f = fields(body)?;
            if f.chassis.as_deref() != Some(me) {
                return Err(not_own("report a VRRP master on another chassis"));
            }
            let on_me = |mac: MacAddr| {
                state
                    .index()
                    .chassis_ports(me)
                    .iter()
                    .filter_map(|p| state.ports.get(p))
                    .any(|p| p.mac == mac && f.vpc.as_deref().is_none_or(|v| v == p.vpc))
            };
            match f.master_mac {
                Some(mac) if !on_me(mac) => Err(Denied::forbidden(
                    "not_own_port",
                    format!("agent:{me} may report only masters behind its own ports"),
                )),
                _ => Ok(()),
            }
        }
        ("POST", ["v1", "vrrp", vpc, _, "assists"]) => {
            let f = fields(body)?;
            if f.by.as_deref() != Some(me) {
                return Err(not_own("record an assist by another chassis"));
            }
            if state.index().chassis_vpcs(me).contains_key(*vpc) {
                Ok(())
            } else {
                Err(Denied::forbidden("not_own_vpc", format!("agent:{me} hosts no port of VPC {vpc}")))
            }
        }
        _ => Err(Denied::forbidden("role", format!("agent:{me} may not {method} /{}", segs.join("/")))),
    }
}

fn replicator(me: &str, method: &str, segs: &[&str], body: &[u8], state: &State) -> Result<(), Denied> {
    let replicated = |vpc: &str| state.vpcs.get(vpc).is_some_and(|v| v.bum == BumMode::Replicator);
    match (method, segs) {
        ("PUT", ["v1", "replicators", name]) | ("GET", ["v1", "watch", "replicators", name]) if *name == me => Ok(()),
        ("PUT", ["v1", "replicators", name]) | ("GET", ["v1", "watch", "replicators", name]) => {
            Err(Denied::forbidden("not_own", format!("replicator:{me} may not act as replicator {name}")))
        }
        ("GET", ["v1", "views", "replicators"]) => Ok(()),
        ("POST", ["v1", "vips", vip, "claims"]) => {
            let f = fields(body)?;
            if f.source != Some(ClaimSource::Replicator) {
                return Err(Denied::forbidden("source", format!("replicator:{me} claims only with source replicator")));
            }
            match state.vips.get(*vip) {
                Some(v) if !replicated(&v.spec.vpc) => Err(Denied::forbidden(
                    "not_replicated",
                    format!("VIP {vip}'s VPC {} is not in replicator mode", v.spec.vpc),
                )),
                _ => Ok(()),
            }
        }
        ("POST", ["v1", "vrrp"]) => {
            let f = fields(body)?;
            match f.vpc.as_deref() {
                Some(vpc) if state.vpcs.contains_key(vpc) && !replicated(vpc) => {
                    Err(Denied::forbidden("not_replicated", format!("VPC {vpc} is not in replicator mode")))
                }
                _ => Ok(()),
            }
        }
        _ => Err(Denied::forbidden("role", format!("replicator:{me} may not {method} /{}", segs.join("/")))),
    }
}

/// Endpoints whose rules read the body.
fn reads_body(method: &str, path: &str) -> bool {
    method == "POST" && (path == "/v1/vrrp" || path.ends_with("/claims") || path.ends_with("/assists"))
}

/// The largest body read to decide (the handlers' own limits are smaller).
const MAX_DECIDED_BODY: usize = 1 << 20;

/// The layer in front of every route when the controller authorizes
/// (`Config::authorize`): the peer's identity from the TLS handshake
/// ([`crate::tls::Peer`]) against [`authorize`]; a refusal is answered 401 /
/// 403 `{"error":{...}}`, counted in
/// `vipcast_controller_requests_denied_total{role,reason}`, and changes
/// nothing. Accepted writes are logged with their actor.
pub(crate) async fn middleware(
    axum::extract::State(c): axum::extract::State<std::sync::Arc<crate::Controller>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !c.config.authorize {
        return next.run(req).await;
    }
    let identity =
        req.extensions().get::<axum::extract::ConnectInfo<crate::tls::Peer>>().and_then(|p| p.0.identity.clone());
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let (req, body) = if reads_body(&method, &path)
        && identity.as_ref().is_some_and(|i| matches!(i.role, PeerRole::Agent | PeerRole::Replicator))
    {
        let (parts, body) = req.into_parts();
        match axum::body::to_bytes(body, MAX_DECIDED_BODY).await {
            Ok(bytes) => (axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes.clone())), bytes),
            Err(_) => {
                return crate::error::ApiError {
                    status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    code: "too_large",
                    field: None,
                    message: format!("the body is over {MAX_DECIDED_BODY} bytes"),
                }
                .into_response();
            }
        }
    } else {
        (req, bytes::Bytes::new())
    };
    let state = c.cache().current().state.clone();
    match authorize(identity.as_ref(), &method, &path, &body, &state) {
        Ok(()) => {
            let response = next.run(req).await;
            // Every accepted write, with who made it.
            if let Some(id) = &identity
                && !matches!(method.as_str(), "GET" | "HEAD")
                && response.status().is_success()
            {
                tracing::info!(actor = id.actor(), method, path, status = response.status().as_u16(), "write accepted");
            }
            response
        }
        Err(d) => {
            let role = identity.as_ref().map_or("none", |i| i.role.as_str());
            c.metrics.denied.get_or_create(&crate::metrics::DeniedLabels { role, reason: d.reason }).inc();
            tracing::warn!(
                actor = identity.as_ref().map(Identity::actor),
                method,
                path,
                reason = d.reason,
                "denied: {}",
                d.message
            );
            let (status, code) = if d.status == 401 {
                (axum::http::StatusCode::UNAUTHORIZED, "unauthenticated")
            } else {
                (axum::http::StatusCode::FORBIDDEN, "forbidden")
            };
            crate::error::ApiError { status, code, field: None, message: d.message }.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vipcast_model::{Chassis, Object, Port, Role, Vip, VipSpec, Vpc};

    const A: &str = "02:00:00:00:00:01"; // pay1 on hv1, VPC prod (head-end)
    const B: &str = "02:00:00:00:00:02"; // pay2 on hv2, VPC prod
    const C: &str = "02:00:00:00:00:03"; // r1 on hv1, VPC rep (replicator mode)

    fn state() -> State {
        let mut s = State::default();
        for (name, vni, bum) in [("prod", 100, BumMode::Headend), ("rep", 200, BumMode::Replicator)] {
            s.put(Object::Vpc(Vpc {
                name: name.into(),
                vni,
                bum,
                arp_suppression: true,
                assist: true,
                encap: vipcast_model::Encap::Vxlan,
            }));
        }
        for (name, ip) in [("hv1", "10.0.0.1"), ("hv2", "10.0.0.2")] {
            s.put(Object::Chassis(Chassis {
                name: name.into(),
                underlay_ip: ip.parse().unwrap(),
                role: Role::Hypervisor,
                dataplane: vipcast_model::Dataplane::Kernel,
                liveness: None,
            }));
        }
        for (name, vpc, chassis, mac, ip) in [
            ("pay1", "prod", "hv1", A, "192.168.10.11"),
            ("pay2", "prod", "hv2", B, "192.168.10.12"),
            ("r1", "rep", "hv1", C, "192.168.20.11"),
        ] {
            s.put(Object::Port(Port::vm(name, vpc, "web", chassis, mac.parse().unwrap(), ip.parse().unwrap())));
        }
        for (name, vpc, ip, members) in [
            ("pay-vip", "prod", "192.168.10.100", vec!["pay1", "pay2"]),
            ("rep-vip", "rep", "192.168.20.100", vec!["r1"]),
        ] {
            s.put(Object::Vip(Vip::new(VipSpec {
                name: name.into(),
                vpc: vpc.into(),
                subnet: "web".into(),
                ip: ip.parse().unwrap(),
                members: members.into_iter().map(String::from).collect(),
            })));
        }
        s
    }

    /// The rows of the matrix file: (method, path, body, letters).
    fn matrix(text: &str) -> Vec<(&str, &str, &str, &str)> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 4, "matrix line {l:?}");
                (f[0], f[1], if f[2] == "-" { "" } else { f[2] }, f[3])
            })
            .collect()
    }

    #[test]
    fn every_identity_against_every_endpoint() {
        let s = state();
        let ids = [
            Some(Identity::new(PeerRole::Admin, "alice")),
            Some(Identity::new(PeerRole::Viewer, "bob")),
            Some(Identity::new(PeerRole::Agent, "hv1")),
            Some(Identity::new(PeerRole::Agent, "hv2")),
            Some(Identity::new(PeerRole::Replicator, "rep1")),
            Some(Identity::new(PeerRole::Controller, "ctl")),
            None,
        ];
        let rows = matrix(include_str!("../tests/authz_matrix.txt"));
        let mut wrong = Vec::new();
        for (method, path, body, want) in &rows {
            assert_eq!(want.len(), ids.len(), "{method} {path}: one letter per identity");
            for (id, expect) in ids.iter().zip(want.chars()) {
                let got = match authorize(id.as_ref(), method, path, body.as_bytes(), &s) {
                    Ok(()) => 'y',
                    Err(d) if d.status == 401 => 'u',
                    Err(_) => 'n',
                };
                if got != expect {
                    wrong.push(format!("{method} {path} {body} as {id:?}: got {got}, want {expect}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{} cells wrong:\n{}", wrong.len(), wrong.join("\n"));
    }
}

//! `GET /v1/vips/{name}/check`: does the data plane agree with the record?
//!
//! The controller asks every chassis taking part in the VIP's VPC where it
//! forwards the VIP (its agent's `/forwarding`, on the chassis' underlay
//! address and [`CheckConfig::agent_port`]: the MAC its ARP / ND answer
//! gives and the chassis that MAC's frames go to, read back from the kernel;
//! a gateway's routed MAC too), and, for a VPC in replicator mode, every
//! replicator which chassis it replicates the VNI to (`/members`, on
//! [`CheckConfig::replicator_port`]), and compares each answer with its own
//! owner and view. Nothing is written; an unreachable chassis is reported
//! as such (its data plane cannot be vouched for).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vipcast_model::{Owner, view};
use vipcast_packet::MacAddr;

use super::{ApiResult, Ctl};
use crate::error::{ApiError, ErrorBody};

/// Where the agents' and replicators' admin endpoints listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckConfig {
    /// Port of `vipcast agent --metrics-listen` on each chassis' underlay address.
    pub agent_port: u16,
    /// Port of `vipcast replicator --admin` on each replicator's address.
    pub replicator_port: u16,
    /// How long each is given to answer.
    pub timeout: Duration,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig { agent_port: 7611, replicator_port: 7610, timeout: Duration::from_secs(2) }
    }
}

/// Chassis and replicators asked at once.
const AT_ONCE: usize = 32;
/// Largest answer read from one of them.
const MAX_ANSWER: usize = 4 << 20;

/// What one chassis does with the VIP, against the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChassisCheck {
    pub chassis: String,
    /// `agrees`, `differs`, `unreachable` (no answer), `unknown` (the
    /// answer says nothing about this VIP).
    pub verdict: String,
    /// The MAC its ARP / ND answer for the VIP gives.
    #[schema(value_type = Option<String>)]
    pub mac: Option<MacAddr>,
    /// The chassis frames to that MAC are sent to.
    pub to_chassis: Option<String>,
    /// Gateways: the MAC routed traffic to the VIP goes to.
    #[schema(value_type = Option<String>)]
    pub routed_mac: Option<MacAddr>,
    /// The owner's generation in that chassis' view.
    pub generation: Option<u64>,
    /// Its owner was decided there without the controller (controller away).
    pub provisional: bool,
    /// Read back from the data plane (false: what the agent programmed).
    pub read_back: bool,
    pub detail: Option<String>,
}

/// What one replicator copies the VPC's BUM traffic to, against the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicatorCheck {
    pub replicator: String,
    /// `agrees`, `differs`, `unreachable`.
    pub verdict: String,
    /// Chassis (underlay addresses) the view has and it does not.
    #[schema(value_type = Vec<String>)]
    pub missing: Vec<IpAddr>,
    /// Addresses it copies to that the view does not have.
    #[schema(value_type = Vec<String>)]
    pub extra: Vec<IpAddr>,
    pub detail: Option<String>,
}

/// The answer of `GET /v1/vips/{name}/check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckReport {
    pub vip: String,
    pub vpc: String,
    #[schema(value_type = String)]
    pub ip: IpAddr,
    pub owner: Option<Owner>,
    pub chassis: Vec<ChassisCheck>,
    pub replicators: Vec<ReplicatorCheck>,
    /// Every chassis and replicator answered and agrees.
    pub consistent: bool,
}

/// An agent's `/forwarding` entry for one VIP.
#[derive(Debug, Clone, Default, Deserialize)]
struct AgentVip {
    name: String,
    owner: Option<AgentOwner>,
    #[serde(default)]
    provisional: bool,
    forwards: Option<AgentForward>,
}

#[derive(Debug, Clone, Deserialize)]
struct AgentOwner {
    generation: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct AgentForward {
    mac: Option<MacAddr>,
    chassis: Option<String>,
    routed_mac: Option<MacAddr>,
    #[serde(default)]
    read_back: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct AgentAnswer {
    #[serde(default)]
    vips: Vec<AgentVip>,
    error: Option<String>,
}

/// Compares one chassis' answer (`Err`: why there is none) with the owner.
fn judge_chassis(chassis: &str, vip: &str, owner: Option<&Owner>, answer: Result<AgentAnswer, String>) -> ChassisCheck {
    let mut c = ChassisCheck {
        chassis: chassis.to_string(),
        verdict: "unreachable".into(),
        mac: None,
        to_chassis: None,
        routed_mac: None,
        generation: None,
        provisional: false,
        read_back: false,
        detail: None,
    };
    let a = match answer {
        Ok(a) => a,
        Err(e) => {
            c.detail = Some(e);
            return c;
        }
    };
    let Some(v) = a.vips.into_iter().find(|v| v.name == vip) else {
        c.verdict = "unknown".into();
        c.detail = Some(a.error.unwrap_or_else(|| "its view has no such VIP".into()));
        return c;
    };
    c.generation = v.owner.map(|o| o.generation);
    c.provisional = v.provisional;
    let f = v.forwards.unwrap_or_default();
    (c.mac, c.to_chassis, c.routed_mac, c.read_back) = (f.mac, f.chassis, f.routed_mac, f.read_back);
    let mut wrong = Vec::new();
    match owner {
        None => {
            if c.mac.is_some() || c.routed_mac.is_some() {
                wrong.push("forwards a VIP without owner".to_string());
            }
        }
        Some(o) => {
            if c.mac.is_some_and(|m| m != o.mac) {
                wrong.push(format!("answers with {} for {}", c.mac.map(|m| m.to_string()).unwrap_or_default(), o.mac));
            }
            if c.mac.is_some() && c.to_chassis.as_deref() != Some(o.chassis.as_str()) {
                wrong.push(format!(
                    "sends to {} instead of {}",
                    c.to_chassis.as_deref().unwrap_or("nowhere"),
                    o.chassis
                ));
            }
            if c.routed_mac.is_some_and(|m| m != o.mac) {
                wrong.push(format!("routes to {}", c.routed_mac.map(|m| m.to_string()).unwrap_or_default()));
            }
            if c.generation.is_some_and(|g| g < o.generation) {
                wrong.push(format!("its view is at generation {:?} of {}", c.generation, o.generation));
            }
        }
    }
    if !wrong.is_empty() {
        c.verdict = "differs".into();
        c.detail = Some(wrong.join("; "));
    } else if c.mac.is_none() && c.routed_mac.is_none() && owner.is_some() {
        c.verdict = "unknown".into();
        c.detail = Some(a.error.unwrap_or_else(|| "no neighbour entry for the VIP (ARP suppression off?)".into()));
    } else {
        c.verdict = "agrees".into();
    }
    c
}

/// Compares a replicator's `/members` answer for `vni` with `expected`.
fn judge_replicator(
    name: &str,
    vni: u32,
    expected: &[IpAddr],
    answer: Result<serde_json::Value, String>,
) -> ReplicatorCheck {
    let mut r = ReplicatorCheck {
        replicator: name.to_string(),
        verdict: "unreachable".into(),
        missing: Vec::new(),
        extra: Vec::new(),
        detail: None,
    };
    let a = match answer {
        Ok(a) => a,
        Err(e) => {
            r.detail = Some(e);
            return r;
        }
    };
    let entry = a["vnis"].as_array().into_iter().flatten().find(|v| v["vni"].as_u64() == Some(u64::from(vni)));
    let have: BTreeSet<IpAddr> = entry
        .and_then(|e| e["members"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str()?.parse().ok())
        .collect();
    let want: BTreeSet<IpAddr> = expected.iter().copied().collect();
    r.missing = want.difference(&have).copied().collect();
    r.extra = have.difference(&want).copied().collect();
    r.verdict = if r.missing.is_empty() && r.extra.is_empty() { "agrees" } else { "differs" }.into();
    if entry.is_none() {
        r.detail = Some(format!("no table for VNI {vni}"));
    }
    r
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

/// GETs `url` and parses its JSON, within `timeout` and [`MAX_ANSWER`].
async fn fetch<T: serde::de::DeserializeOwned>(url: String, timeout: Duration) -> Result<T, String> {
    let get = async {
        let resp = http().get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("{url}: {e}"))?;
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(format!("{url}: answer over {} MiB", MAX_ANSWER >> 20));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
    };
    tokio::time::timeout(timeout, get).await.map_err(|_| format!("{url}: no answer within {timeout:?}"))?
}

/// Checks can be expensive (a request to every chassis of a VPC): a few at once.
fn checks_at_once() -> &'static tokio::sync::Semaphore {
    static S: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    S.get_or_init(|| tokio::sync::Semaphore::new(2))
}

/// Asks the chassis of the VIP's VPC (and its replicators) what they
/// forward the VIP to, and compares with the record. Read only.
#[utoipa::path(get, path = "/v1/vips/{name}/check", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    responses(
        (status = 200, description = "Each chassis' and replicator's answer against the owner and the view; `consistent` when all answered and agree", body = CheckReport),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
))]
pub(super) async fn check_vip(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<CheckReport>> {
    let state = c.cache.current().state.clone();
    let vip = state.vips.get(&name).cloned().ok_or_else(|| ApiError::not_found("VIP", &name))?;
    let _turn = checks_at_once().acquire().await.map_err(|_| ApiError::unavailable("shutting down"))?;
    let cfg = c.config.check;
    let vpc = vip.spec.vpc.clone();
    let targets: Vec<(String, SocketAddr)> = view::participants(&state, &vpc)
        .into_iter()
        .filter_map(|n| state.chassis.get(&n).map(|ch| (n, SocketAddr::new(ch.underlay_ip, cfg.agent_port))))
        .collect();
    let owner = vip.owner.clone();
    let mut chassis: Vec<ChassisCheck> = futures::stream::iter(targets)
        .map(|(n, addr)| {
            let (owner, name) = (owner.clone(), name.clone());
            async move {
                let answer = fetch::<AgentAnswer>(format!("http://{addr}/forwarding"), cfg.timeout).await;
                judge_chassis(&n, &name, owner.as_ref(), answer)
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    chassis.sort_by(|a, b| a.chassis.cmp(&b.chassis));
    let mut replicators = Vec::new();
    if let Some((vni, entry)) = state.vpcs.get(&vpc).and_then(|v| view::replicator_entry(&state, v)) {
        let expected = Arc::new(entry.members);
        replicators = futures::stream::iter(state.replicators.values().cloned().collect::<Vec<_>>())
            .map(|r| {
                let expected = expected.clone();
                let addr = SocketAddr::new(r.address.ip(), cfg.replicator_port);
                async move {
                    let answer = fetch::<serde_json::Value>(format!("http://{addr}/members"), cfg.timeout).await;
                    judge_replicator(&r.name, vni, &expected, answer)
                }
            })
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        replicators.sort_by(|a: &ReplicatorCheck, b| a.replicator.cmp(&b.replicator));
    }
    let consistent = chassis.iter().all(|c| c.verdict == "agrees") && replicators.iter().all(|r| r.verdict == "agrees");
    Ok(Json(CheckReport { vip: name, vpc, ip: vip.spec.ip, owner, chassis, replicators, consistent }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn owner() -> Owner {
        Owner { port: "pay2".into(), mac: B, chassis: "hv2".into(), generation: 4, since: 0 }
    }

    fn answer(mac: Option<MacAddr>, to: Option<&str>, generation: u64) -> Result<AgentAnswer, String> {
        Ok(AgentAnswer {
            vips: vec![AgentVip {
                name: "pay-vip".into(),
                owner: Some(AgentOwner { generation }),
                provisional: false,
                forwards: Some(AgentForward {
                    mac,
                    chassis: to.map(str::to_string),
                    routed_mac: None,
                    read_back: true,
                }),
            }],
            error: None,
        })
    }

    #[test]
    fn a_chassis_agrees_only_when_it_answers_and_forwards_to_the_owner() {
        let o = owner();
        let v = |a| judge_chassis("hv3", "pay-vip", Some(&o), a).verdict;
        assert_eq!(v(answer(Some(B), Some("hv2"), 4)), "agrees");
        assert_eq!(v(answer(Some(A), Some("hv1"), 4)), "differs");
        assert_eq!(v(answer(Some(B), Some("hv1"), 4)), "differs", "the right MAC sent to the wrong chassis");
        assert_eq!(v(answer(Some(B), Some("hv2"), 3)), "differs", "a view behind the record");
        assert_eq!(v(answer(None, None, 4)), "unknown");
        assert_eq!(v(Err("no answer".into())), "unreachable");
        assert_eq!(v(Ok(AgentAnswer { vips: vec![], error: None })), "unknown");
        let d = judge_chassis("hv3", "pay-vip", Some(&o), answer(Some(A), Some("hv1"), 4));
        assert_eq!(
            d.detail.as_deref(),
            Some("answers with 02:00:00:00:00:01 for 02:00:00:00:00:02; sends to hv1 instead of hv2")
        );
    }

    #[test]
    fn a_replicator_agrees_only_with_the_same_members() {
        let want: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let members = |m: &[&str]| Ok(serde_json::json!({"vnis": [{"vni": 100, "members": m}]}));
        assert_eq!(judge_replicator("r1", 100, &want, members(&["10.0.0.2", "10.0.0.1"])).verdict, "agrees");
        let r = judge_replicator("r1", 100, &want, members(&["10.0.0.1", "10.0.0.9"]));
        assert_eq!((r.verdict.as_str(), r.missing.len(), r.extra.len()), ("differs", 1, 1));
        assert_eq!(judge_replicator("r1", 200, &want, members(&["10.0.0.1"])).verdict, "differs");
        assert_eq!(judge_replicator("r1", 100, &want, Err("x".into())).verdict, "unreachable");
    }
}

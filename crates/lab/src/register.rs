//! Registration of a lab's objects through the controller's REST API, in
//! dependency order: VPCs, subnets, chassis, ports (one per VM), VIPs.

use std::time::Duration;

use serde_json::{Value, json};
use vipcast_tls::ClientFiles;

use crate::config::LabConfig;
use crate::plan::Plan;
use crate::{Error, Result};

/// One REST call.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    /// `POST` or `PUT`
    pub method: &'static str,
    /// e.g. `/v1/vpcs`
    pub path: String,
    pub body: Value,
    /// What it creates, for messages: `vpc "prod"`.
    pub what: String,
}

/// The calls that register `cfg`, in order. Chassis are registered with the
/// same underlay IP, role and data plane their agent uses (`PUT` is
/// idempotent); a chassis' data plane must be known before a port of a GRE
/// VPC can be placed on it.
pub fn calls(cfg: &LabConfig, plan: &Plan) -> Vec<ApiCall> {
    let mut v = Vec::new();
    for vpc in &cfg.vpc {
        v.push(ApiCall {
            method: "POST",
            path: "/v1/vpcs".into(),
            body: json!({"name": vpc.name, "vni": vpc.vni, "bum": vpc.bum.as_str(), "arp_suppression": vpc.arp_suppression, "assist": vpc.assist, "encap": vpc.encap.as_str()}),
            what: format!("vpc {:?}", vpc.name),
        });
    }
    for s in &cfg.subnet {
        let mut body = json!({"vpc": s.vpc, "name": s.name, "cidr": s.cidr.to_string()});
        if let Some(gw) = s.gateway {
            body["gateway"] = json!(gw.to_string());
        }
        v.push(ApiCall { method: "POST", path: "/v1/subnets".into(), body, what: format!("subnet {:?}", s.name) });
    }
    for ch in &plan.chassis {
        v.push(ApiCall {
            method: "PUT",
            path: format!("/v1/chassis/{}", ch.name),
            body: json!({"underlay_ip": ch.underlay_ip.to_string(), "role": ch.role.as_str(), "dataplane": ch.dataplane.as_str()}),
            what: format!("chassis {:?}", ch.name),
        });
    }
    for vm in &plan.vms {
        let mut body = json!({
            "name": vm.name, "vpc": vm.vpc, "subnet": vm.subnet, "chassis": vm.chassis,
            "mac": vm.mac, "ip": vm.addr.addr().to_string(),
        });
        if let (Some(a6), Some(s6)) = (vm.addr6, &vm.subnet6) {
            body["ip6"] = json!(a6.addr().to_string());
            body["subnet6"] = json!(s6);
        }
        if let Some(h) = &vm.host {
            body["type"] = json!("physical");
            body["interface"] = json!(vm.port);
            if let Some(vlan) = h.vlan {
                body["vlan"] = json!(vlan);
            }
            if let Some((standby, _)) = &h.standby {
                body["standby_chassis"] = json!(standby);
            }
        }
        v.push(ApiCall { method: "POST", path: "/v1/ports".into(), body, what: format!("port {:?}", vm.name) });
    }
    for vip in &cfg.vip {
        v.push(ApiCall {
            method: "POST",
            path: "/v1/vips".into(),
            body: json!({"name": vip.name, "vpc": vip.vpc, "subnet": vip.subnet, "ip": vip.ip.to_string(), "members": vip.members}),
            what: format!("vip {:?}", vip.name),
        });
    }
    v
}

/// Makes `calls` against the controller at `base` (e.g.
/// `https://10.254.3.2:7600`, with the host's client files), stopping at the first refusal with the
/// controller's message.
pub fn register(base: &str, tls: Option<&ClientFiles>, calls: &[ApiCall]) -> Result<()> {
    let client =
        crate::state::http_client(tls, Duration::from_secs(10)).map_err(|e| Error::Lab(format!("http client: {e}")))?;
    for call in calls {
        let url = format!("{base}{}", call.path);
        let req = match call.method {
            "PUT" => client.put(&url),
            _ => client.post(&url),
        };
        let resp = req
            .json(&call.body)
            .send()
            .map_err(|e| Error::Lab(format!("registering {}: {} {url}: {e}", call.what, call.method)))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or(text);
            return Err(Error::Lab(format!(
                "the controller refused {} ({} {}: {status}): {message}",
                call.what, call.method, call.path
            )));
        }
    }
    Ok(())
}

//! The overlay target: a VIP of a lab that `vipcast lab up` built, resolved
//! from the lab's state file and the controller's API.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;
use vipcast_lab::plan::{self, VM_IF};
use vipcast_lab::state::{Root, http_get};
use vipcast_tls::ClientFiles;

use crate::target::{Member, Node, Overlay, Target, keepalived_params};
use crate::{Error, Result};

const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

fn get_json(url: &str, tls: Option<&ClientFiles>) -> Result<Value> {
    let body = http_get(url, tls, HTTP_TIMEOUT).map_err(|e| Error::Failed(format!("GET {url}: {e}")))?;
    serde_json::from_str(&body).map_err(|e| Error::Failed(format!("GET {url}: {e}")))
}

/// The VIP `vip` (its name or its address) of lab `lab`, probed from node
/// `from` (a VM or external client; by default a VM of the VIP's VPC that
/// is not a member, else the first external client).
pub fn resolve(root: &Root, lab: &str, vip: &str, from: Option<&str>) -> Result<Target> {
    let Some(state) = root.read(lab)? else {
        return Err(vipcast_lab::state::not_up(lab).into());
    };
    let url = state.controller_url.trim_end_matches('/').to_string();
    let tls = state.client_files();
    let vips = get_json(&format!("{url}/v1/vips"), tls.as_ref())?;
    let vips = vips.as_array().cloned().unwrap_or_default();
    let Some(v) = vips.iter().find(|v| v["name"] == vip || v["ip"] == vip).cloned() else {
        let names: Vec<String> = vips.iter().filter_map(|v| v["name"].as_str().map(str::to_string)).collect();
        return Err(Error::Failed(format!(
            "lab {lab} has no VIP named or at {vip:?} (VIPs: {})",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )));
    };
    let vip_name = v["name"].as_str().unwrap_or_default().to_string();
    let vip_ip: IpAddr = v["ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Failed(format!("VIP {vip_name}: no address in {v}")))?;
    let vpc = v["vpc"].as_str().unwrap_or_default().to_string();
    let ports = get_json(&format!("{url}/v1/ports"), tls.as_ref())?;
    let ports = ports.as_array().cloned().unwrap_or_default();
    let port = |name: &str| ports.iter().find(|p| p["name"] == name).cloned();
    let net_ns = plan::net_namespace(lab);
    let mut members = Vec::new();
    let mut keepalived = Vec::new();
    for m in v["members"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let p = port(m).ok_or_else(|| Error::Failed(format!("VIP {vip_name}: member {m} has no port")))?;
        let ip = address_like(&p, vip_ip).ok_or_else(|| Error::Failed(format!("port {m}: no address")))?;
        let chassis = p["chassis"].as_str().unwrap_or_default().to_string();
        let ns = plan::namespace(lab, m);
        let prefix = prefix_of(&ns, VM_IF, ip).unwrap_or(if ip.is_ipv4() { 24 } else { 64 });
        members.push(Member {
            name: m.to_string(),
            ns,
            dev: VM_IF.to_string(),
            ip,
            prefix,
            mac: p["mac"].as_str().unwrap_or_default().to_string(),
            chassis: Some(chassis.clone()),
            cut_ns: net_ns.clone(),
            cut_dev: chassis,
        });
        let conf = state.state_dir.join(format!("keepalived-{vip_name}-{m}.conf"));
        keepalived.push(std::fs::read_to_string(conf).ok());
    }
    if members.len() < 2 {
        return Err(Error::Failed(format!("VIP {vip_name} has {} member(s): a failover needs two", members.len())));
    }
    // The preferred master first: the highest keepalived priority (the lab
    // gives the first member 150, the others 100).
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse(keepalived.get(i).and_then(|c| c.as_deref()).and_then(|c| keepalived_params(c).0))
    });
    let members: Vec<Member> = order.iter().filter_map(|&i| members.get(i).cloned()).collect();
    let keepalived: Vec<Option<String>> = order.iter().map(|&i| keepalived.get(i).cloned().flatten()).collect();
    let advert_int = keepalived
        .iter()
        .flatten()
        .filter_map(|c| keepalived_params(c).1)
        .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
    let client = pick_client(&state, lab, &vpc, &members, &ports, from, vip_ip)?;
    let agent_logs =
        state.processes.iter().filter(|p| p.role == "agent").map(|p| (p.node.clone(), p.log.clone())).collect();
    let vpc_json = get_json(&format!("{url}/v1/vpcs/{vpc}"), tls.as_ref()).ok();
    let vni = vpc_json.as_ref().and_then(|v| v["vni"].as_u64()).and_then(|n| u32::try_from(n).ok());
    // Platform-assisted handover (absent from older controllers: off).
    let assist = vpc_json.as_ref().and_then(|v| v["assist"].as_bool()).unwrap_or(false);
    let replicators = state.processes.iter().filter(|p| p.role == "replicator").cloned().collect();
    // A MariaDB pair: each member has its directory (lab `workloads` step).
    let dirs: Vec<_> =
        members.iter().map(|m| vipcast_lab::workload::member_dir(&state.state_dir, &vip_name, &m.name)).collect();
    let mut workload = dirs.iter().all(|d| d.join("db.env").exists()).then_some(crate::target::Workload {
        kind: "mariadb",
        dirs,
        service: "mariadbd",
        db: Vec::new(),
    });
    // A payment service: its directories, and the database VIP its backends
    // write through (their `--db`), with that pair's directories.
    let web: Vec<_> =
        members.iter().map(|m| vipcast_lab::workload::web_dir(&state.state_dir, &vip_name, &m.name)).collect();
    if web.iter().all(|d| d.join("nginx.conf").exists()) {
        let db_ip = state
            .processes
            .iter()
            .filter(|p| p.role == "payment-backend")
            .find_map(|p| p.command.split_whitespace().skip_while(|w| *w != "--db").nth(1).map(str::to_string))
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip());
        let db_vip = vips.iter().find(|v| db_ip.is_some_and(|ip| v["ip"] == ip.to_string()));
        let db: Vec<_> = db_vip
            .map(|d| {
                let name = d["name"].as_str().unwrap_or_default();
                d["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|m| (plan::namespace(lab, m), vipcast_lab::workload::member_dir(&state.state_dir, name, m)))
                    .collect()
            })
            .unwrap_or_default();
        workload = Some(crate::target::Workload { kind: "http", dirs: web, service: "nginx", db });
    }
    Ok(Target {
        variant: if assist { "overlay+assist" } else { "overlay" }.into(),
        vip_name,
        vip_ip,
        members,
        client,
        advert_int: advert_int.unwrap_or(1.0),
        keepalived,
        overlay: Some(Overlay {
            lab: lab.to_string(),
            controller_url: url,
            tls,
            agent_logs,
            vpc,
            vni,
            replicators,
            root: root.0.clone(),
        }),
        workload,
    })
}

fn pick_client(
    state: &vipcast_lab::state::LabState,
    lab: &str,
    vpc: &str,
    members: &[Member],
    ports: &[Value],
    from: Option<&str>,
    vip_ip: IpAddr,
) -> Result<Node> {
    let is_member = |n: &str| members.iter().any(|m| m.name == n);
    let node = |name: &str| -> Option<Node> {
        let n = state.nodes.iter().find(|n| n.name == name && matches!(n.kind.as_str(), "vm" | "host" | "external"))?;
        let ip = ports.iter().find(|p| p["name"] == name).and_then(|p| address_like(p, vip_ip));
        Some(Node { name: n.name.clone(), ns: n.namespace.clone(), ip })
    };
    if let Some(f) = from {
        if is_member(f) {
            return Err(Error::Failed(format!("--from {f}: {f} is a member of the VIP; probe from another node")));
        }
        return node(f).ok_or_else(|| {
            let nodes: Vec<&str> = state
                .nodes
                .iter()
                .filter(|n| matches!(n.kind.as_str(), "vm" | "host" | "external"))
                .map(|n| n.name.as_str())
                .collect();
            Error::Failed(format!("lab {lab} has no VM, host or external client {f:?} (nodes: {})", nodes.join(", ")))
        });
    }
    let vm = ports
        .iter()
        .filter(|p| p["vpc"] == vpc && address_like(p, vip_ip).is_some())
        .filter_map(|p| p["name"].as_str())
        .find(|n| !is_member(n))
        .and_then(node);
    let ext = || state.nodes.iter().find(|n| n.kind == "external").and_then(|n| node(&n.name));
    vm.or_else(ext).ok_or_else(|| {
        Error::Failed(format!(
            "lab {lab} has no VM in VPC {vpc} besides the VIP's members and no external client to probe from"
        ))
    })
}

/// A port's address of the family of `like` (`ip`, or a dual-stack
/// port's `ip6`).
fn address_like(port: &Value, like: IpAddr) -> Option<IpAddr> {
    ["ip", "ip6"]
        .iter()
        .filter_map(|k| port[*k].as_str()?.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() == like.is_ipv4())
}

/// The prefix length of `ip` on `dev` in namespace `ns`.
pub fn prefix_of(ns: &str, dev: &str, ip: IpAddr) -> Option<u8> {
    let text = vipcast_lab::ip(&["-n", ns, "-j", "addr", "show", "dev", dev]).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get(0)?["addr_info"]
        .as_array()?
        .iter()
        .find(|a| a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(ip))
        .and_then(|a| a["prefixlen"].as_u64())
        .and_then(|p| u8::try_from(p).ok())
}

/// Whether `ip` is configured on `dev` in namespace `ns`.
pub fn has_address(ns: &str, dev: &str, ip: IpAddr) -> bool {
    prefix_of(ns, dev, ip).is_some()
}

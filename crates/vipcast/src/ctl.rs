//! `vipcast ctl`: a client of the controller's REST API. Tables by default,
//! `--json` for scripts. Errors show the controller's message.

use std::net::{IpAddr, SocketAddr};

use anyhow::bail;
use clap::{Args, Subcommand};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};
use vipcast_client::Method;

#[derive(Debug, Args)]
pub struct Ctl {
    /// Controller URL.
    #[arg(long, env = "VIPCAST_CONTROLLER", default_value = "http://127.0.0.1:7600", global = true)]
    controller: String,
    /// Print the controller's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// VPCs: VXLAN segments.
    Vpc {
        #[command(subcommand)]
        verb: VpcVerb,
    },
    /// Subnets of VPCs.
    Subnet {
        #[command(subcommand)]
        verb: SubnetVerb,
    },
    /// Hypervisors and gateways.
    Chassis {
        #[command(subcommand)]
        verb: ChassisVerb,
    },
    /// VM ports.
    Port {
        #[command(subcommand)]
        verb: PortVerb,
    },
    /// Virtual IPs.
    Vip {
        #[command(subcommand)]
        verb: VipVerb,
    },
    /// BUM replicators.
    Replicator {
        #[command(subcommand)]
        verb: ReplicatorVerb,
    },
    /// The VRRP view: virtual routers and their masters, as reported by
    /// the masters' chassis.
    Vrrp,
    /// What a chassis programs, as the controller computes it.
    View {
        /// Chassis name.
        chassis: String,
    },
}

#[derive(Debug, Subcommand)]
enum VpcVerb {
    Create {
        name: String,
        #[arg(long)]
        vni: u32,
        /// headend or replicator.
        #[arg(long, default_value = "replicator")]
        bum: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        arp_suppression: bool,
        /// Platform-assisted VRRP handover.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        assist: bool,
    },
    /// Changes the settings that may change after creation.
    Set {
        name: String,
        /// Platform-assisted VRRP handover.
        #[arg(long, action = clap::ArgAction::Set)]
        assist: Option<bool>,
        #[arg(long, action = clap::ArgAction::Set)]
        arp_suppression: Option<bool>,
    },
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum SubnetVerb {
    Create {
        #[arg(long)]
        vpc: String,
        name: String,
        #[arg(long)]
        cidr: String,
        #[arg(long)]
        gateway: Option<IpAddr>,
    },
    List,
    Show {
        vpc: String,
        name: String,
    },
    Delete {
        vpc: String,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ChassisVerb {
    /// Registers (or updates) a chassis.
    Register {
        name: String,
        #[arg(long)]
        underlay_ip: IpAddr,
        /// hypervisor or gateway.
        #[arg(long, default_value = "hypervisor")]
        role: String,
    },
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum PortVerb {
    Create {
        name: String,
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        subnet: String,
        #[arg(long)]
        chassis: String,
        #[arg(long)]
        mac: String,
        #[arg(long)]
        ip: IpAddr,
    },
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum VipVerb {
    Create {
        name: String,
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        subnet: String,
        #[arg(long)]
        ip: IpAddr,
        /// Member ports, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Ownership changes, oldest first.
    History {
        name: String,
    },
    /// Asks every chassis of the VIP's VPC (and its replicators) what they
    /// forward the VIP to, against the controller's owner; exits 1 unless
    /// all answer and agree.
    Check {
        name: String,
    },
    /// Prints the owner, then every change of owner as it happens, until
    /// interrupted (or the VIP is deleted).
    Watch {
        name: String,
    },
    /// Replaces the member list.
    Members {
        name: String,
        #[arg(value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Marks a member eligible to take the VIP, or not (`--eligible
    /// false`: its claims are refused and nothing hands the VIP to it).
    Member {
        name: String,
        port: String,
        #[arg(long, action = clap::ArgAction::Set)]
        eligible: bool,
    },
    /// Reports a GARP / NA as a sniffer would.
    Claim {
        name: String,
        #[arg(long)]
        mac: String,
        #[arg(long)]
        chassis: String,
        /// agent or replicator.
        #[arg(long, default_value = "agent")]
        source: String,
    },
}

#[derive(Debug, Subcommand)]
enum ReplicatorVerb {
    Register {
        name: String,
        #[arg(long)]
        address: SocketAddr,
    },
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
}

/// A request: method, path, body.
type Req = (Method, String, Option<Value>);

fn crud(kind: &str, verb: &str, name: Option<&str>, body: Option<Value>) -> Req {
    match (verb, name) {
        ("list", _) => (Method::GET, format!("/v1/{kind}"), None),
        ("show", Some(n)) => (Method::GET, format!("/v1/{kind}/{n}"), None),
        ("delete", Some(n)) => (Method::DELETE, format!("/v1/{kind}/{n}"), None),
        _ => (Method::POST, format!("/v1/{kind}"), body),
    }
}

fn request(what: What) -> Req {
    match what {
        What::Vpc { verb } => match verb {
            VpcVerb::Create { name, vni, bum, arp_suppression, assist } => crud(
                "vpcs",
                "create",
                None,
                Some(
                    json!({"name": name, "vni": vni, "bum": bum, "arp_suppression": arp_suppression, "assist": assist}),
                ),
            ),
            VpcVerb::Set { name, assist, arp_suppression } => {
                let mut b = serde_json::Map::new();
                if let Some(a) = assist {
                    b.insert("assist".into(), json!(a));
                }
                if let Some(a) = arp_suppression {
                    b.insert("arp_suppression".into(), json!(a));
                }
                (Method::PATCH, format!("/v1/vpcs/{name}"), Some(Value::Object(b)))
            }
            VpcVerb::List => crud("vpcs", "list", None, None),
            VpcVerb::Show { name } => crud("vpcs", "show", Some(&name), None),
            VpcVerb::Delete { name } => crud("vpcs", "delete", Some(&name), None),
        },
        What::Subnet { verb } => match verb {
            SubnetVerb::Create { vpc, name, cidr, gateway } => {
                let mut b = json!({"vpc": vpc, "name": name, "cidr": cidr});
                if let (Some(g), Some(o)) = (gateway, b.as_object_mut()) {
                    o.insert("gateway".into(), json!(g));
                }
                crud("subnets", "create", None, Some(b))
            }
            SubnetVerb::List => crud("subnets", "list", None, None),
            SubnetVerb::Show { vpc, name } => crud("subnets", "show", Some(&format!("{vpc}/{name}")), None),
            SubnetVerb::Delete { vpc, name } => crud("subnets", "delete", Some(&format!("{vpc}/{name}")), None),
        },
        What::Chassis { verb } => match verb {
            ChassisVerb::Register { name, underlay_ip, role } => {
                (Method::PUT, format!("/v1/chassis/{name}"), Some(json!({"underlay_ip": underlay_ip, "role": role})))
            }
            ChassisVerb::List => crud("chassis", "list", None, None),
            ChassisVerb::Show { name } => crud("chassis", "show", Some(&name), None),
            ChassisVerb::Delete { name } => crud("chassis", "delete", Some(&name), None),
        },
        What::Port { verb } => match verb {
            PortVerb::Create { name, vpc, subnet, chassis, mac, ip } => crud(
                "ports",
                "create",
                None,
                Some(json!({"name": name, "vpc": vpc, "subnet": subnet, "chassis": chassis, "mac": mac, "ip": ip})),
            ),
            PortVerb::List => crud("ports", "list", None, None),
            PortVerb::Show { name } => crud("ports", "show", Some(&name), None),
            PortVerb::Delete { name } => crud("ports", "delete", Some(&name), None),
        },
        What::Vip { verb } => match verb {
            VipVerb::Create { name, vpc, subnet, ip, members } => crud(
                "vips",
                "create",
                None,
                Some(json!({"name": name, "vpc": vpc, "subnet": subnet, "ip": ip, "members": members})),
            ),
            VipVerb::List => crud("vips", "list", None, None),
            VipVerb::Show { name } => crud("vips", "show", Some(&name), None),
            VipVerb::Delete { name } => crud("vips", "delete", Some(&name), None),
            VipVerb::History { name } => (Method::GET, format!("/v1/vips/{name}/history"), None),
            VipVerb::Check { name } => (Method::GET, format!("/v1/vips/{name}/check"), None),
            VipVerb::Watch { name } => (Method::GET, format!("/v1/vips/{name}/watch"), None),
            VipVerb::Members { name, members } => {
                (Method::PUT, format!("/v1/vips/{name}/members"), Some(json!({"members": members})))
            }
            VipVerb::Member { name, port, eligible } => {
                (Method::PUT, format!("/v1/vips/{name}/members/{port}"), Some(json!({"eligible": eligible})))
            }
            VipVerb::Claim { name, mac, chassis, source } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                (
                    Method::POST,
                    format!("/v1/vips/{name}/claims"),
                    Some(json!({"mac": mac, "chassis": chassis, "source": source, "observed_at": now})),
                )
            }
        },
        What::Vrrp => (Method::GET, "/v1/vrrp".to_string(), None),
        What::Replicator { verb } => match verb {
            ReplicatorVerb::Register { name, address } => {
                (Method::PUT, format!("/v1/replicators/{name}"), Some(json!({"address": address})))
            }
            ReplicatorVerb::List => crud("replicators", "list", None, None),
            ReplicatorVerb::Show { name } => crud("replicators", "show", Some(&name), None),
            ReplicatorVerb::Delete { name } => crud("replicators", "delete", Some(&name), None),
        },
        What::View { chassis } => (Method::GET, format!("/v1/views/chassis/{chassis}"), None),
    }
}

pub async fn run(ctl: Ctl) -> anyhow::Result<()> {
    let watch = matches!(&ctl.what, What::Vip { verb: VipVerb::Watch { .. } });
    let (method, path, body) = request(ctl.what);
    let client = vipcast_client::ControllerClient::with_tls(&ctl.controller, ctl.tls.files()?.as_ref())?;
    if watch {
        return watch_vip(&client, &path, ctl.json).await;
    }
    let value = match client.call(method.clone(), &path, body.as_ref(), vipcast_client::Retry::ONCE).await {
        Ok(v) => v,
        Err(vipcast_client::Error::Refused { status, code, message, .. }) => {
            let status = reqwest::StatusCode::from_u16(status).map(|s| s.to_string()).unwrap_or(status.to_string());
            bail!("{method} {path}: {status}: {message} ({code})");
        }
        Err(e) => bail!("{method} {path}: {e}"),
    };
    let check = path.ends_with("/check").then(|| value["consistent"].as_bool() == Some(true));
    if ctl.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if check.is_some() {
        print_check(&value);
    } else {
        print_table(&value);
    }
    if check == Some(false) {
        bail!("the data plane does not agree with the controller everywhere (see above)");
    }
    Ok(())
}

/// `vip check`: the owner, then one row per chassis and replicator.
fn print_check(v: &Value) {
    println!("{} ({}) in VPC {}: owner {}", cell(&v["vip"]), cell(&v["ip"]), cell(&v["vpc"]), cell(&v["owner"]));
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header([
        "chassis",
        "verdict",
        "answers with",
        "sends to",
        "routes to",
        "generation",
        "provisional",
        "detail",
    ]);
    for c in v["chassis"].as_array().into_iter().flatten() {
        t.add_row(
            ["chassis", "verdict", "mac", "to_chassis", "routed_mac", "generation", "provisional", "detail"]
                .map(|k| cell(&c[k])),
        );
    }
    println!("{t}");
    if let Some(rs) = v["replicators"].as_array().filter(|r| !r.is_empty()) {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
        t.set_header(["replicator", "verdict", "missing", "extra", "detail"]);
        for r in rs {
            t.add_row(["replicator", "verdict", "missing", "extra", "detail"].map(|k| cell(&r[k])));
        }
        println!("{t}");
    }
    println!("{}", if v["consistent"].as_bool() == Some(true) { "consistent" } else { "NOT consistent" });
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")
        }
        Value::Object(o) if o.contains_key("port") && o.contains_key("generation") => format!(
            "{} ({}, {}, gen {})",
            o.get("port").map(cell).unwrap_or_default(),
            o.get("mac").map(cell).unwrap_or_default(),
            o.get("chassis").map(cell).unwrap_or_default(),
            o.get("generation").map(cell).unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

fn print_table(v: &Value) {
    let rows: Vec<&serde_json::Map<String, Value>> = match v {
        Value::Array(a) => a.iter().filter_map(Value::as_object).collect(),
        Value::Object(o) => vec![o],
        Value::Null => return,
        other => {
            println!("{other}");
            return;
        }
    };
    let Some(first) = rows.first() else {
        println!("(none)");
        return;
    };
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    let cols: Vec<&String> = first.keys().collect();
    t.set_header(cols.iter().map(|c| c.as_str()));
    for r in &rows {
        t.add_row(cols.iter().map(|c| r.get(*c).map(cell).unwrap_or_default()));
    }
    println!("{t}");
}

/// `vip watch`: follows `GET /v1/vips/NAME/watch`, a line per change.
async fn watch_vip(client: &vipcast_client::ControllerClient, path: &str, json: bool) -> anyhow::Result<()> {
    use futures::StreamExt;
    let url = format!("{}{path}", client.base());
    let resp = client.http().get(&url).send().await.map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        bail!("GET {path}: {status}: {}", body["error"]["message"].as_str().unwrap_or("no message"));
    }
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?;
        if buf.len() + chunk.len() > 1 << 20 {
            bail!("GET {path}: a line over 1 MiB");
        }
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let v: Value = serde_json::from_slice(&line).map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?;
            if json {
                if v.get("ping").is_none() {
                    println!("{v}");
                }
            } else if let Some(text) = watch_line(&v) {
                println!("{text}");
            }
            if v["deleted"] == true {
                return Ok(());
            }
        }
    }
    bail!("GET {path}: the controller ended the stream")
}

/// `HH:MM:SS.mmm` (UTC) of ms since the Unix epoch.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", s / 3600 % 24, s / 60 % 60, s % 60, ms % 1000)
}

/// One line of `vip watch` for people (`None`: nothing to say).
fn watch_line(v: &Value) -> Option<String> {
    let owner = |o: &Value| {
        format!(
            "{} ({} on {}), generation {}",
            cell(&o["port"]),
            cell(&o["mac"]),
            cell(&o["chassis"]),
            cell(&o["generation"])
        )
    };
    if let Some(c) = v.get("change") {
        let (observed, accepted) = (c["observed_at"].as_u64()?, c["accepted_at"].as_u64()?);
        return Some(format!(
            "{} {} -> {}, observed {} ({} ms before it was accepted){}",
            clock(accepted),
            c["previous_port"].as_str().unwrap_or("nobody"),
            owner(&c["owner"]),
            clock(observed),
            accepted.saturating_sub(observed),
            c["actor"].as_str().map(|a| format!(", claimed by {a}")).unwrap_or_default()
        ));
    }
    if v["deleted"] == true {
        return Some("the VIP was deleted".into());
    }
    match v.get("owner") {
        Some(Value::Null) => Some("no owner yet".into()),
        Some(o) => Some(format!("owner {} since {}", owner(o), clock(o["since"].as_u64().unwrap_or(0)))),
        None => None,
    }
}

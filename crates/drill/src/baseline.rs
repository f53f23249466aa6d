//! The native-L2 baseline: the same VRRP group on one plain Linux bridge.
//!
//! ```text
//!          vcb<id>-br: bridge br0 (no VXLAN, no vipcast)
//!        ┌──────────────┬──────────────┬──────────────┐
//!   vcb<id>-m0      vcb<id>-m1        ...        vcb<id>-c
//!   member 0        member 1                     client (prober)
//!   keepalived      keepalived
//! ```
//! Each member gets the lab's address, MTU and keepalived configuration
//! (the very file the lab wrote), and the same responder; the client gets
//! the lab client's address if it is in the VIP's subnet, else a free one.
//! Every namespace, link and process is a guard: dropping the
//! [`Baseline`] removes everything, also when a drill fails.

use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::process::Command;

use ipnet::IpNet;
use vipcast_lab::plan::VM_MTU;
use vipcast_lab::{Child, Netns, Veth, unique_id};

use crate::target::{Member, Node, Target};
use crate::{Error, Result};

/// The bridge in the baseline's bridge namespace.
pub const BRIDGE: &str = "br0";

/// A built baseline; everything goes on drop (processes first).
#[derive(Debug)]
pub struct Baseline {
    target: Target,
    // Drop order: keepalived, links, namespaces, files.
    _keepalived: Vec<Child>,
    _veths: Vec<Veth>,
    _namespaces: Vec<Netns>,
    _dir: tempfile::TempDir,
}

impl Baseline {
    /// Builds the baseline of `overlay` (its members' addresses and
    /// keepalived configurations) and waits until the preferred master
    /// holds the VIP.
    pub fn build(overlay: &Target, progress: &dyn Fn(&str)) -> Result<Baseline> {
        if overlay.keepalived.iter().any(Option::is_none) {
            return Err(Error::Refused(format!(
                "no baseline for VIP {}: the lab does not run keepalived for every member (vrrp = \"keepalived\")",
                overlay.vip_name
            )));
        }
        let id = unique_id();
        let dir = tempfile::Builder::new()
            .prefix("vipcast-baseline-")
            .tempdir()
            .map_err(|e| Error::Failed(format!("temporary directory: {e}")))?;
        let mut namespaces = Vec::new();
        let mut veths = Vec::new();
        let br = Netns::new(format!("vcb{id}-br"))?;
        br.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        br.ip(&["link", "set", BRIDGE, "up"])?;
        let br_name = br.name().to_string();
        namespaces.push(br);
        let mut members = Vec::new();
        // Attaches namespace `ns` to the bridge as port `p<id><i>`, its
        // end renamed to the lab's interface name.
        let attach = |i: usize,
                      dev: &str,
                      addr: &str,
                      namespaces: &mut Vec<Netns>,
                      veths: &mut Vec<Veth>,
                      name: &str|
         -> Result<(String, String)> {
            let ns = Netns::new(format!("vcb{id}-{name}"))?;
            let (a, b) = (format!("vb{id}{i}"), format!("vp{id}{i}"));
            let br_ns = namespaces.first().ok_or_else(|| Error::Failed("no bridge namespace".into()))?;
            let veth = Veth::new(&a, Some(&ns), &b, Some(br_ns))?;
            ns.ip(&["link", "set", &a, "down"])?;
            ns.ip(&["link", "set", &a, "name", dev])?;
            let mtu = VM_MTU.to_string();
            ns.ip(&["link", "set", dev, "mtu", &mtu])?;
            br_ns.ip(&["link", "set", &b, "mtu", &mtu])?;
            ns.run("sysctl", &["-qw", &format!("net.ipv6.conf.{dev}.accept_dad=0")])?;
            let mut add = vec!["addr", "add", addr, "dev", dev];
            if addr.contains(':') {
                add.push("nodad");
            }
            ns.ip(&add)?;
            ns.ip(&["link", "set", dev, "up"])?;
            br_ns.ip(&["link", "set", &b, "master", BRIDGE, "up"])?;
            let ns_name = ns.name().to_string();
            veths.push(veth);
            namespaces.push(ns);
            Ok((ns_name, b))
        };
        for (i, m) in overlay.members.iter().enumerate() {
            let addr = format!("{}/{}", m.ip, m.prefix);
            let (ns, port) = attach(i, &m.dev, &addr, &mut namespaces, &mut veths, &format!("m{i}"))?;
            members.push(Member {
                name: m.name.clone(),
                ns,
                dev: m.dev.clone(),
                ip: m.ip,
                prefix: m.prefix,
                mac: String::new(),
                chassis: None,
                cut_ns: br_name.clone(),
                cut_dev: port,
            });
        }
        let first = overlay.master().ok_or_else(|| Error::Failed("no members".into()))?;
        let subnet = IpNet::new(first.ip, first.prefix).map_err(|e| Error::Failed(e.to_string()))?.trunc();
        let client_ip = match overlay.client.ip {
            Some(ip) if subnet.contains(&ip) => ip,
            _ => free_address(&subnet, overlay)?,
        };
        let client_dev = "eth0";
        let (client_ns, _) = attach(
            overlay.members.len(),
            client_dev,
            &format!("{client_ip}/{}", subnet.prefix_len()),
            &mut namespaces,
            &mut veths,
            "c",
        )?;
        // The workload first (keepalived tracks its files): the same pair,
        // from the lab's template, in directories of the baseline's own.
        let mut keepalived = Vec::new();
        let mut workload = None;
        let mut moved_dirs = Vec::new();
        if overlay.workload.as_ref().is_some_and(|w| w.kind == "http") {
            return Err(Error::Refused(format!(
                "no baseline for VIP {}: its payment service writes through the lab's database VIP, which a plain \
                 bridge does not have (use --no-baseline)",
                overlay.vip_name
            )));
        }
        if let Some(w) = &overlay.workload {
            let lab_dir =
                w.dirs.first().and_then(|d| d.parent()).ok_or_else(|| Error::Failed("no workload directory".into()))?;
            let template = lab_dir.join("mariadb-template");
            let password = vipcast_lab::workload::password(&w.dirs[0])?;
            let mut dirs = Vec::new();
            for (i, m) in members.iter().enumerate() {
                let peer = members.iter().find(|o| o.name != m.name).map(|o| o.ip).unwrap_or(m.ip);
                let here = dir.path().join(format!("mariadb-m{i}"));
                let member =
                    vipcast_lab::workload::Member { dir: &here, server_id: i as u32 + 1, peer, password: &password };
                vipcast_lab::workload::prepare(&member, &template)?;
                vipcast_lab::workload::start(&m.ns, &here, i == 0)?;
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &m.ns]).arg(here.join("dbctl")).arg("watch").process_group(0);
                keepalived.push(Child::spawn(&mut cmd, &here.join("watch.log"))?);
                if let Some(lab) = w.dirs.get(i) {
                    moved_dirs.push((lab.to_string_lossy().into_owned(), here.to_string_lossy().into_owned()));
                }
                dirs.push(here);
            }
            progress(&format!("baseline: the MariaDB pair started ({})", dirs[0].display()));
            workload = Some(crate::target::Workload { kind: w.kind, dirs, service: w.service, db: Vec::new() });
        }
        // keepalived with the lab's own configuration files.
        for (m, conf) in members.iter().zip(&overlay.keepalived) {
            let mut conf = conf.clone().unwrap_or_default();
            for (lab, here) in &moved_dirs {
                conf = conf.replace(lab.as_str(), here);
            }
            let stem = dir.path().join(format!("keepalived-{}", m.name));
            let conf_path = stem.with_extension("conf");
            std::fs::write(&conf_path, conf).map_err(|e| Error::Failed(format!("{}: {e}", conf_path.display())))?;
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &m.ns, "keepalived", "-n", "-l", "-D", "-G", "-P", "-f"]).arg(&conf_path);
            for (flag, ext) in [("-p", "pid"), ("-r", "vrrp.pid"), ("-c", "check.pid"), ("-b", "bfd.pid")] {
                cmd.arg(flag).arg(stem.with_extension(ext));
            }
            cmd.process_group(0);
            keepalived.push(Child::spawn(&mut cmd, &stem.with_extension("log"))?);
        }
        progress(&format!(
            "baseline: bridge {BRIDGE} in {br_name}; {} and the client {client_ip} on it; keepalived with the lab's \
             configuration in each member",
            members.iter().map(|m| format!("{} {}", m.name, m.ip)).collect::<Vec<_>>().join(", ")
        ));
        let target = Target {
            variant: "baseline".into(),
            vip_name: overlay.vip_name.clone(),
            vip_ip: overlay.vip_ip,
            members,
            client: Node { name: format!("{} (bridge)", overlay.client.name), ns: client_ns, ip: Some(client_ip) },
            advert_int: overlay.advert_int,
            keepalived: overlay.keepalived.clone(),
            overlay: None,
            workload,
        };
        Ok(Baseline { target, _keepalived: keepalived, _veths: veths, _namespaces: namespaces, _dir: dir })
    }

    /// The baseline as a drill target.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

/// The highest host address of `subnet` that neither the VIP nor a member has.
fn free_address(subnet: &IpNet, t: &Target) -> Result<IpAddr> {
    let taken = |ip: &IpAddr| *ip == t.vip_ip || t.members.iter().any(|m| m.ip == *ip);
    let candidates: Box<dyn Iterator<Item = IpAddr>> = match subnet {
        IpNet::V4(n) => {
            let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
            Box::new((lo.saturating_add(1)..hi).rev().take(1000).map(|x| IpAddr::V4(x.into())))
        }
        IpNet::V6(n) => Box::new(n.hosts().take(1000).map(IpAddr::V6)),
    };
    candidates
        .filter(|ip| !taken(ip))
        .find(|ip| subnet.contains(ip))
        .ok_or_else(|| Error::Failed(format!("no free address in {subnet} for the baseline's client")))
}

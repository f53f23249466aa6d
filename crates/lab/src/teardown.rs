//! `vipcast lab down NAME`: removes everything of a lab. It needs no state
//! file: the lab's namespaces are found by their prefix `<name>-` (lab names
//! have no `-`, so no other lab's namespace has it), the host veth by its
//! alias `vipcast-lab:<name>` (and it goes with its peer's namespace anyway),
//! the Open vSwitch instances of OVS chassis by their run directories
//! `ovs-<chassis>` in the lab's state directory. Running it again finds
//! nothing and does nothing.

use std::time::{Duration, Instant};

use crate::state::{Root, pid_alive};
use crate::{Error, Result, ip};

/// What `down` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownReport {
    /// Processes that were running in the lab's namespaces.
    pub processes: usize,
    /// Of those, how many needed SIGKILL.
    pub killed: usize,
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
    /// Whether a state file or directory was removed.
    pub state_removed: bool,
}

impl DownReport {
    /// Whether there was nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.processes == 0 && self.namespaces.is_empty() && self.links.is_empty() && !self.state_removed
    }
}

/// Every network namespace on the machine.
pub fn list_namespaces() -> Result<Vec<String>> {
    // "name (id: N)" or "name"
    Ok(ip(&["netns", "list"])?.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
}

/// The namespaces of lab `name`: those named `<name>-…`.
pub fn lab_namespaces(name: &str) -> Result<Vec<String>> {
    let prefix = format!("{name}-");
    let mut v: Vec<String> = list_namespaces()?.into_iter().filter(|n| n.starts_with(&prefix)).collect();
    v.sort();
    Ok(v)
}

/// Host links whose alias is `vipcast-lab:<name>`.
pub fn host_links(name: &str) -> Result<Vec<String>> {
    let want = format!("{}{name}", crate::plan::HOST_ALIAS_PREFIX);
    let text = ip(&["-j", "link", "show"])?;
    let links: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Lab(format!("ip -j link: {e}")))?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l.get("ifalias").and_then(|a| a.as_str()) == Some(want.as_str()))
        .filter_map(|l| l.get("ifname").and_then(|n| n.as_str()).map(str::to_string))
        .collect())
}

/// The pids of the processes in namespace `ns`.
pub fn namespace_pids(ns: &str) -> Vec<u32> {
    ip(&["netns", "pids", ns]).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// Sends `signal` to `pids`.
fn signal(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let mut cmd = std::process::Command::new("kill");
    cmd.arg(format!("-{signal}"));
    cmd.args(pids.iter().map(u32::to_string));
    let _ = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
}

/// Waits up to `limit` for `pids` to exit; returns those still running.
fn wait_exit(pids: &[u32], limit: Duration) -> Vec<u32> {
    let end = Instant::now() + limit;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
        if left.is_empty() || Instant::now() >= end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops every process in `namespaces`: SIGTERM (keepalived sends its
/// priority-0 advert, etcd and the controller close cleanly), SIGKILL after
/// `grace`. Returns (processes, how many needed SIGKILL).
pub fn stop_processes(namespaces: &[String], grace: Duration) -> (usize, usize) {
    let pids: Vec<u32> = namespaces.iter().flat_map(|ns| namespace_pids(ns)).collect();
    signal(&pids, "TERM");
    let left = wait_exit(&pids, grace);
    signal(&left, "KILL");
    let still = wait_exit(&left, Duration::from_secs(5));
    // Anything that entered a namespace meanwhile (a process forked by one we stopped).
    let late: Vec<u32> = namespaces.iter().flat_map(|ns| namespace_pids(ns)).filter(|p| !still.contains(p)).collect();
    signal(&late, "KILL");
    wait_exit(&late, Duration::from_secs(2));
    (pids.len() + late.len(), left.len() + late.len())
}

/// Removes lab `name`: stops its Open vSwitch instances (`exit --cleanup`,
/// see [`crate::ovs::Ovs::stop`]) and every other process in its namespaces,
/// deletes the namespaces (and with them every link and address inside) and
/// the host veth, and removes its state (OVS run directories included).
/// `progress` gets one line per step.
pub fn down(root: &Root, name: &str, progress: &dyn Fn(&str)) -> Result<DownReport> {
    if !crate::config::is_lab_name(name) {
        return Err(Error::Lab(format!(
            "{name:?} is not a lab name (letters, digits, '_'; at most {} bytes)",
            crate::config::MAX_LAB_NAME
        )));
    }
    let state = match root.read(name) {
        Ok(s) => s,
        Err(e) => {
            progress(&format!("lab {name}: unreadable state ({e}); removing what is found by name"));
            None
        }
    };
    let mut report = DownReport::default();
    let mut namespaces = lab_namespaces(name)?;
    if state.is_none() && !namespaces.is_empty() {
        progress(&format!("lab {name}: no state file; found {} namespaces named {name}-*", namespaces.len()));
    }
    for dir in crate::ovs::run_dirs(&root.state_dir(name)) {
        let stopped = crate::ovs::Ovs::new(&dir).stop();
        if stopped > 0 {
            progress(&format!("lab {name}: stopped Open vSwitch in {} ({stopped} daemons)", dir.display()));
            report.processes += stopped;
        }
    }
    let (processes, killed) = stop_processes(&namespaces, Duration::from_secs(3));
    report.processes += processes;
    report.killed = killed;
    if processes > 0 {
        progress(&format!(
            "lab {name}: stopped {processes} processes{}",
            if killed > 0 { format!(" ({killed} with SIGKILL)") } else { String::new() }
        ));
    }
    namespaces.sort();
    for ns in &namespaces {
        match ip(&["netns", "del", ns]) {
            Ok(_) => report.namespaces.push(ns.clone()),
            Err(e) => progress(&format!("lab {name}: cannot delete namespace {ns}: {e}")),
        }
    }
    if !report.namespaces.is_empty() {
        progress(&format!("lab {name}: deleted namespaces {}", report.namespaces.join(" ")));
    }
    let mut links = host_links(name).unwrap_or_default();
    if let Some(s) = &state
        && !links.contains(&s.host_link.name)
    {
        links.push(s.host_link.name.clone());
    }
    for link in links {
        // Gone already when its peer's namespace went away.
        if ip(&["link", "del", &link]).is_ok() {
            progress(&format!("lab {name}: deleted host link {link}"));
            report.links.push(link);
        }
    }
    let file = root.state_file(name);
    let dir = root.state_dir(name);
    if file.exists() {
        std::fs::remove_file(&file).map_err(|e| Error::Lab(format!("cannot remove {}: {e}", file.display())))?;
        report.state_removed = true;
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::Lab(format!("cannot remove {}: {e}", dir.display())))?;
        report.state_removed = true;
    }
    if report.state_removed {
        progress(&format!("lab {name}: removed {} and {}", file.display(), dir.display()));
    }
    let left = lab_namespaces(name)?;
    if !left.is_empty() {
        return Err(Error::Lab(format!("lab {name}: namespaces still there: {}", left.join(", "))));
    }
    Ok(report)
}

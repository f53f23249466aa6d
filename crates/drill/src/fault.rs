//! The faults a drill injects, and how each is undone.
//!
//! | fault | injected | undone |
//! |---|---|---|
//! | `link-down` | `ip link set eth0 down` in the master VM | link up, default routes put back (the kernel drops them with the link) |
//! | `vm-freeze` | SIGSTOP to every process in the master VM's namespace (keepalived, the responder) | SIGCONT |
//! | `chassis-down` | the master's chassis cut from the underlay: its port on the underlay bridge down (baseline: the VM's port on the bridge) | port up |
//! | `replicator-down` | SIGKILL to the replicator the master's chassis uses for the VIP's VNI | started again with the same command |
//! | `controller-down` | SIGKILL to the controller, then (once the agents have lost it) `link-down` on the master: a failover with no controller (baseline: `link-down`) | the controller started again with the same command and store (and waited for) before the link comes up |
//!
//! An [`Injected`] fault is a guard: dropped without [`Injected::restore`]
//! (an error, Ctrl-C), it is undone anyway.

use std::fmt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::str::FromStr;

use crate::probe::now_us;
use crate::target::{Member, Target};
use crate::{Error, Result};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    LinkDown,
    VmFreeze,
    ChassisDown,
    ReplicatorDown,
    ControllerDown,
    /// kill -9 of the workload's server process on the master.
    ServiceKill,
}

impl Fault {
    /// Every fault, in the order drills and tables list them.
    pub const ALL: [Fault; 6] = [
        Fault::LinkDown,
        Fault::VmFreeze,
        Fault::ChassisDown,
        Fault::ReplicatorDown,
        Fault::ControllerDown,
        Fault::ServiceKill,
    ];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::LinkDown => "link-down",
            Fault::VmFreeze => "vm-freeze",
            Fault::ChassisDown => "chassis-down",
            Fault::ReplicatorDown => "replicator-down",
            Fault::ControllerDown => "controller-down",
            Fault::ServiceKill => "service-kill",
        }
    }

    /// Whether the VIP is expected to move to another member.
    pub fn moves_vip(self) -> bool {
        !matches!(self, Fault::ReplicatorDown)
    }

    /// Whether the native-L2 baseline has an equivalent.
    pub fn has_baseline(self) -> bool {
        self.moves_vip()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Fault, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown fault {s:?}: one of {}", Fault::ALL.map(Fault::as_str).join(", ")))
    }
}

/// How to undo a fault.
#[derive(Debug)]
enum Undo {
    LinkUp {
        ns: String,
        dev: String,
        routes: Vec<(&'static str, Vec<String>)>,
    },
    Resume {
        pids: Vec<u32>,
    },
    PortUp {
        ns: String,
        dev: String,
    },
    Restart {
        ns: String,
        command: Vec<String>,
        log: std::path::PathBuf,
        lab: String,
        root: std::path::PathBuf,
        old_pid: u32,
        /// `/healthz` to wait for (a controller), with the client files.
        ready: Option<(String, Option<vipcast_tls::ClientFiles>)>,
    },
    /// The first, then the second.
    Both(Box<Undo>, Box<Undo>),
}

/// How long a restarted controller may take to answer `/healthz`.
const READY_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long the agents are given to lose a killed controller before the
/// master's link goes down (their watch streams end at once with it).
const CONTROLLER_GONE: std::time::Duration = std::time::Duration::from_millis(300);

/// A fault in effect; undone on [`Injected::restore`] or on drop.
#[derive(Debug)]
pub struct Injected {
    pub fault: Fault,
    /// When the fault was injected: just before the command that injects it
    /// (µs since the Unix epoch).
    pub at_us: u64,
    /// How long that command took (µs): the fault took effect within.
    pub took_us: u64,
    /// What was done, for people.
    pub what: String,
    undo: Option<Undo>,
}

/// Whether `fault` can be injected into `target` at all (replicator-down
/// needs a running replicator); the error says why not.
pub fn check(fault: Fault, target: &Target) -> Result<()> {
    if fault == Fault::ServiceKill && target.workload.is_none() {
        return Err(Error::Refused(format!(
            "service-kill: VIP {} has no workload (`[[vip]] workload`) whose server could be killed",
            target.vip_name
        )));
    }
    if fault == Fault::ControllerDown {
        return match &target.overlay {
            Some(ov) if controller_process(ov).is_none() => Err(Error::Refused(format!(
                "controller-down: lab {} has no running controller process to stop",
                ov.lab
            ))),
            _ => Ok(()),
        };
    }
    if fault != Fault::ReplicatorDown {
        return Ok(());
    }
    match &target.overlay {
        None => Err(Error::Refused("replicator-down: the baseline has no replicator".into())),
        Some(ov) if ov.running_replicators().is_empty() => Err(Error::Refused(format!(
            "replicator-down: lab {} runs no replicator (its VPCs use head-end replication, or this `vipcast lab` \
             does not start replicators): nothing to kill",
            ov.lab
        ))),
        Some(_) => Ok(()),
    }
}

/// Injects `fault` on `master` of `target`.
pub fn inject(fault: Fault, target: &Target, master: &Member) -> Result<Injected> {
    match fault {
        Fault::LinkDown => {
            let routes = default_routes(&master.ns, &master.dev);
            let at_us = now_us();
            vipcast_lab::ip(&["-n", &master.ns, "link", "set", &master.dev, "down"])?;
            Ok(Injected {
                fault,
                at_us,
                took_us: now_us() - at_us,
                what: format!("ip -n {} link set {} down", master.ns, master.dev),
                undo: Some(Undo::LinkUp { ns: master.ns.clone(), dev: master.dev.clone(), routes }),
            })
        }
        Fault::VmFreeze => {
            let pids = vipcast_lab::teardown::namespace_pids(&master.ns);
            if pids.is_empty() {
                return Err(Error::Failed(format!("vm-freeze: no process runs in {}", master.ns)));
            }
            let at_us = now_us();
            signal(&pids, "STOP")?;
            Ok(Injected {
                fault,
                at_us,
                took_us: now_us() - at_us,
                what: format!("SIGSTOP to the {} processes of {} (keepalived, the responder)", pids.len(), master.ns),
                undo: Some(Undo::Resume { pids }),
            })
        }
        Fault::ChassisDown => {
            let at_us = now_us();
            vipcast_lab::ip(&["-n", &master.cut_ns, "link", "set", &master.cut_dev, "down"])?;
            let whose = master.chassis.as_deref().map(|c| format!("chassis {c}'s")).unwrap_or("the VM's".into());
            Ok(Injected {
                fault,
                at_us,
                took_us: now_us() - at_us,
                what: format!("{whose} port {} in {} down", master.cut_dev, master.cut_ns),
                undo: Some(Undo::PortUp { ns: master.cut_ns.clone(), dev: master.cut_dev.clone() }),
            })
        }
        Fault::ReplicatorDown => replicator_down(target, master),
        Fault::ControllerDown => controller_down(target, master),
        Fault::ServiceKill => service_kill(target, master),
    }
}

/// kill -9 of the workload's server in the master; nothing to undo (the
/// member's own scripts bring it back as a replica).
fn service_kill(target: &Target, master: &Member) -> Result<Injected> {
    check(Fault::ServiceKill, target)?;
    let service = target.workload.as_ref().map(|w| w.service).unwrap_or_default();
    let pids: Vec<u32> = vipcast_lab::teardown::namespace_pids(&master.ns)
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == service))
        .collect();
    if pids.is_empty() {
        return Err(Error::Failed(format!("service-kill: no {service} runs in {}", master.ns)));
    }
    let at_us = now_us();
    signal(&pids, "KILL")?;
    Ok(Injected {
        fault: Fault::ServiceKill,
        at_us,
        took_us: now_us() - at_us,
        what: format!(
            "SIGKILL to {service} (pid {}) in {}",
            pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            master.ns
        ),
        undo: None,
    })
}

/// The lab's controller process, if it runs.
fn controller_process(ov: &crate::target::Overlay) -> Option<vipcast_lab::state::ProcessState> {
    let state = vipcast_lab::state::Root(ov.root.clone()).read(&ov.lab).ok()??;
    state.processes.into_iter().find(|p| p.role == "controller" && p.is_running())
}

fn controller_down(target: &Target, master: &Member) -> Result<Injected> {
    let Some(ov) = &target.overlay else {
        // A plain bridge has no controller: the same link-down.
        let mut i = inject(Fault::LinkDown, target, master)?;
        i.fault = Fault::ControllerDown;
        i.what = format!("{} (no controller on a plain bridge)", i.what);
        return Ok(i);
    };
    check(Fault::ControllerDown, target)?;
    let victim = controller_process(ov).ok_or_else(|| Error::Refused("controller-down: no controller".into()))?;
    kill(&victim)?;
    std::thread::sleep(CONTROLLER_GONE);
    let restart = restart_undo(&victim, ov, Some((format!("{}/healthz", ov.controller_url), ov.tls.clone())));
    let mut link = inject(Fault::LinkDown, target, master)?;
    let Some(link_up) = link.undo.take() else {
        return Err(Error::Failed("controller-down: link-down left nothing to undo".into()));
    };
    Ok(Injected {
        fault: Fault::ControllerDown,
        at_us: link.at_us,
        took_us: link.took_us,
        what: format!("SIGKILL to the controller (pid {}), then {}", victim.pid, link.what),
        undo: Some(Undo::Both(Box::new(restart), Box::new(link_up))),
    })
}

fn replicator_down(target: &Target, master: &Member) -> Result<Injected> {
    let Some(ov) = &target.overlay else {
        return Err(Error::Refused("replicator-down: the baseline has no replicator".into()));
    };
    check(Fault::ReplicatorDown, target)?;
    let running = ov.running_replicators();
    // The replicator the master's chassis uses for the VIP's VNI: the last
    // `BumPath` event of its agent's log for that VNI.
    let chassis = master.chassis.as_deref().unwrap_or_default();
    let in_use = ov
        .agent_logs
        .iter()
        .find(|(c, _)| c == chassis)
        .and_then(|(_, log)| std::fs::read_to_string(log).ok())
        .and_then(|text| {
            text.lines()
                .map(crate::stages::strip_ansi)
                .filter(|l| vipcast_api::EventKind::find(l).is_some_and(|(k, _)| k == vipcast_api::EventKind::BumPath))
                .filter(|l| ov.vni.is_none_or(|v| l.contains(&format!("vni={v} "))))
                .filter_map(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("replicator="))
                        .map(|r| r.trim_matches('"').to_string())
                })
                .next_back()
        });
    let victim = match &in_use {
        Some(name) => running.iter().find(|p| &p.node == name),
        None => None,
    }
    .or(if running.len() == 1 { running.first() } else { None })
    .ok_or_else(|| {
        Error::Refused(format!(
            "replicator-down: cannot tell which replicator chassis {chassis} uses for VNI {:?} (no `BUM via \
             replicator` line in its agent's log)",
            ov.vni
        ))
    })?;
    let at_us = now_us();
    signal(&[victim.pid], "KILL")?;
    Ok(Injected {
        fault: Fault::ReplicatorDown,
        at_us,
        took_us: now_us() - at_us,
        what: format!("SIGKILL to replicator {} (pid {}), used by {chassis}", victim.node, victim.pid),
        undo: Some(restart_undo(victim, ov, None)),
    })
}

impl Injected {
    /// Starts the control plane again (`controller-down`: the controller,
    /// waited for) and leaves the rest of the fault in place; whether there
    /// was anything to start.
    pub fn restore_control_plane(&mut self) -> Result<bool> {
        match self.undo.take() {
            Some(Undo::Both(first, then)) => {
                self.undo = Some(*then);
                undo(*first)?;
                Ok(true)
            }
            other => {
                self.undo = other;
                Ok(false)
            }
        }
    }

    /// Undoes the fault.
    pub fn restore(mut self) -> Result<()> {
        match self.undo.take() {
            Some(u) => undo(u),
            None => Ok(()),
        }
    }
}

impl Drop for Injected {
    fn drop(&mut self) {
        if let Some(u) = self.undo.take() {
            let _ = undo(u);
        }
    }
}

fn undo(u: Undo) -> Result<()> {
    match u {
        Undo::LinkUp { ns, dev, routes } => {
            vipcast_lab::ip(&["-n", &ns, "link", "set", &dev, "up"])?;
            for (family, r) in routes {
                let mut args = vec!["-n", ns.as_str(), family, "route", "replace"];
                args.extend(r.iter().map(String::as_str));
                // IPv6 puts the link's prefix route back a moment after the
                // link comes up (addrconf runs deferred): until then the
                // gateway is "No route to host". Wait for it, up to 2 s.
                let mut tries = 0;
                loop {
                    match vipcast_lab::ip(&args) {
                        Ok(_) => break,
                        Err(_) if family == "-6" && tries < 100 => {
                            tries += 1;
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Ok(())
        }
        Undo::Resume { pids } => signal(&pids, "CONT"),
        Undo::PortUp { ns, dev } => {
            vipcast_lab::ip(&["-n", &ns, "link", "set", &dev, "up"])?;
            Ok(())
        }
        Undo::Both(first, then) => {
            let a = undo(*first);
            undo(*then)?;
            a
        }
        Undo::Restart { ns, command, log, lab, root, old_pid, ready } => {
            let Some((program, args)) = command.split_first() else {
                return Err(Error::Failed(format!("restarting pid {old_pid}: empty command")));
            };
            let out = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&log)
                .map_err(|e| Error::Failed(format!("{}: {e}", log.display())))?;
            let err = out.try_clone().map_err(|e| Error::Failed(e.to_string()))?;
            let child = Command::new("ip")
                .args(["netns", "exec", &ns, program])
                .args(args)
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| Error::Failed(format!("restarting {program}: {e}")))?;
            // The lab owns it from now on: record its new pid.
            let root = vipcast_lab::state::Root(root);
            if let Ok(Some(mut state)) = root.read(&lab) {
                for p in state.processes.iter_mut().filter(|p| p.pid == old_pid) {
                    p.pid = child.id();
                }
                root.write(&state)?;
            }
            if let Some((url, tls)) = ready {
                let start = std::time::Instant::now();
                while vipcast_lab::state::http_get(&url, tls.as_ref(), std::time::Duration::from_secs(1)).is_err() {
                    if start.elapsed() > READY_LIMIT {
                        return Err(Error::Failed(format!(
                            "the restarted controller did not answer {url} within {} s (log {})",
                            READY_LIMIT.as_secs(),
                            log.display()
                        )));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            Ok(())
        }
    }
}

/// Starts lab process `p` again with its recorded command (its log
/// appended, its new pid recorded in the lab's state); with `ready`, waits
/// until that URL answers.
pub(crate) fn restart(
    p: &vipcast_lab::state::ProcessState,
    ov: &crate::target::Overlay,
    ready: Option<(String, Option<vipcast_tls::ClientFiles>)>,
) -> Result<()> {
    undo(restart_undo(p, ov, ready))
}

/// How to start lab process `p` again (see [`restart`]).
fn restart_undo(
    p: &vipcast_lab::state::ProcessState,
    ov: &crate::target::Overlay,
    ready: Option<(String, Option<vipcast_tls::ClientFiles>)>,
) -> Undo {
    Undo::Restart {
        ns: p.namespace.clone(),
        command: p.command.split_whitespace().map(str::to_string).collect(),
        log: p.log.clone(),
        lab: ov.lab.clone(),
        root: ov.root.clone(),
        old_pid: p.pid,
        ready,
    }
}

/// SIGKILL to `pid`, and waits (at most 5 s) until it is gone.
pub(crate) fn kill(p: &vipcast_lab::state::ProcessState) -> Result<()> {
    signal(&[p.pid], "KILL")?;
    let start = std::time::Instant::now();
    while p.is_running() && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// `ip route show default dev DEV` in `ns` (both families), as arguments
/// for `ip FAMILY route replace`.
fn default_routes(ns: &str, dev: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut v = Vec::new();
    for family in ["-4", "-6"] {
        let Ok(text) = vipcast_lab::ip(&["-n", ns, family, "route", "show", "default", "dev", dev]) else { continue };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            // `show ... dev DEV` omits the device; put it back.
            if !args.iter().any(|a| a == "dev") {
                args.extend(["dev".to_string(), dev.to_string()]);
            }
            v.push((family, args));
        }
    }
    v
}

/// `kill -SIGNAL PIDS...`
/// Sends `sig` to `pids`. A process that exited meanwhile (a namespace's
/// short-lived helpers come and go) is no error; failing to signal one that
/// still exists is.
fn signal(pids: &[u32], sig: &str) -> Result<()> {
    let mut cmd = Command::new("kill");
    cmd.arg(format!("-{sig}")).args(pids.iter().map(u32::to_string));
    match vipcast_lab::run(&mut cmd) {
        Ok(_) => Ok(()),
        Err(e) => {
            let alive = |pid: &&u32| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|st| st.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
            };
            let text = e.to_string();
            let failed: Vec<&u32> =
                pids.iter().filter(alive).filter(|pid| text.contains(&format!("({pid})"))).collect();
            if failed.is_empty() { Ok(()) } else { Err(e.into()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(f.as_str().parse::<Fault>(), Ok(f));
        }
        assert!("link-up".parse::<Fault>().unwrap_err().contains("link-down, vm-freeze"));
    }
}

//! What a drill acts on: a VRRP group (the VIP and its member VMs, each a
//! network namespace), the node the prober runs in, and — for an overlay
//! lab — where the control plane's records are. [`crate::lab`] resolves it
//! from a lab that is up, [`crate::baseline`] builds the native-L2 copy.

use std::net::IpAddr;
use std::path::PathBuf;

use vipcast_lab::state::ProcessState;

/// A VRRP group under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// `overlay` or `baseline` (what the report calls this variant).
    pub variant: String,
    pub vip_name: String,
    pub vip_ip: IpAddr,
    /// The members; the first is the preferred master (highest priority),
    /// which holds the VIP before every run.
    pub members: Vec<Member>,
    /// Where the prober runs.
    pub client: Node,
    /// The VRRP advertisement interval (s), from the keepalived configuration.
    pub advert_int: f64,
    /// The keepalived configuration of each member (same order), if the
    /// lab runs keepalived: the baseline reuses them.
    pub keepalived: Vec<Option<String>>,
    /// The control plane, for an overlay lab.
    pub overlay: Option<Overlay>,
    /// What the members run behind the VIP (`[[vip]] workload`).
    pub workload: Option<Workload>,
}

/// A workload on the members: for `mariadb`, each member's directory
/// (`my.cnf`, `db.env`, `dbctl`; same order as the members).
#[derive(Debug, Clone)]
pub struct Workload {
    /// `mariadb` or `http`.
    pub kind: &'static str,
    pub dirs: Vec<PathBuf>,
    /// The server process `service-kill` kills in the master.
    pub service: &'static str,
    /// `http`: the database pair it writes through (namespace, directory).
    pub db: Vec<(String, PathBuf)>,
}

/// A member VM.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub ns: String,
    /// Its interface and address (with prefix length).
    pub dev: String,
    pub ip: IpAddr,
    pub prefix: u8,
    pub mac: String,
    /// Its chassis (overlay).
    pub chassis: Option<String>,
    /// Where the chassis-down fault cuts: a link in a namespace (the
    /// chassis' port on the underlay bridge; in the baseline, the VM's port
    /// on the bridge).
    pub cut_ns: String,
    pub cut_dev: String,
}

/// A node of the lab (a VM or an external client).
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub ns: String,
    /// Its address, when it is in the VIP's subnet.
    pub ip: Option<IpAddr>,
}

/// The control plane of an overlay lab.
#[derive(Debug, Clone)]
pub struct Overlay {
    pub lab: String,
    /// The controller, as the host reaches it.
    pub controller_url: String,
    /// The host's client files when the lab runs over mutual TLS.
    pub tls: Option<vipcast_tls::ClientFiles>,
    /// (chassis, agent log)
    pub agent_logs: Vec<(String, PathBuf)>,
    /// The VIP's VPC and its VNI.
    pub vpc: String,
    pub vni: Option<u32>,
    /// Replicator processes the lab started (when it was resolved; see
    /// [`Overlay::running_replicators`]).
    pub replicators: Vec<ProcessState>,
    /// The directory of the lab's state file.
    pub root: PathBuf,
}

impl Overlay {
    /// The lab's replicator processes that run now (the state file is
    /// re-read: a drill that restarts a replicator records its new pid there).
    pub fn running_replicators(&self) -> Vec<ProcessState> {
        let root = vipcast_lab::state::Root(self.root.clone());
        let procs = match root.read(&self.lab) {
            Ok(Some(state)) => state.processes,
            _ => self.replicators.clone(),
        };
        procs.into_iter().filter(|p| p.role == "replicator" && p.is_running()).collect()
    }
}

impl Target {
    /// The preferred master.
    pub fn master(&self) -> Option<&Member> {
        self.members.first()
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// The `priority` and `advert_int` of a keepalived configuration.
pub fn keepalived_params(conf: &str) -> (Option<u32>, Option<f64>) {
    let mut priority = None;
    let mut advert = None;
    for line in conf.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("priority"), Some(v)) => priority = v.parse().ok(),
            (Some("advert_int"), Some(v)) => advert = v.parse().ok(),
            _ => {}
        }
    }
    (priority, advert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_parameters() {
        let conf = "vrrp_instance v {\n    state BACKUP\n    priority 150\n    advert_int 0.1\n}\n";
        assert_eq!(keepalived_params(conf), (Some(150), Some(0.1)));
        assert_eq!(keepalived_params(""), (None, None));
    }
}

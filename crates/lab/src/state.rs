//! What is up: `/run/vipcast/labs/<name>.json` (this file's [`LabState`]) and
//! the lab's state directory `/run/vipcast/labs/<name>/` (configurations,
//! logs, the controller's store).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vipcast_tls::ClientFiles;

use crate::{Error, Result};

/// Where labs keep their state unless told otherwise.
pub const DEFAULT_ROOT: &str = "/run/vipcast/labs";

/// The directory holding every lab's state file and state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(pub PathBuf);

impl Default for Root {
    fn default() -> Root {
        Root(PathBuf::from(DEFAULT_ROOT))
    }
}

impl Root {
    /// `<root>/<name>.json`
    pub fn state_file(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.json"))
    }

    /// `<root>/<name>/`
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The state of lab `name`, if it is up (`Ok(None)` when there is no
    /// state file).
    pub fn read(&self, name: &str) -> Result<Option<LabState>> {
        let path = self.state_file(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Lab(format!("cannot read {}: {e}", path.display()))),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| Error::Lab(format!("{}: {e}", path.display())))
    }

    /// Writes the state file (atomically: a temporary file renamed).
    pub fn write(&self, state: &LabState) -> Result<()> {
        let path = self.state_file(&state.name);
        let tmp = self.0.join(format!(".{}.json.tmp", state.name));
        let text = serde_json::to_string_pretty(state).map_err(|e| Error::Lab(e.to_string()))?;
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::Lab(format!("cannot write {}: {e}", path.display())))
    }
}

/// A lab that is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    /// The lab file it was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// When `lab up` finished (ms since the Unix epoch).
    pub created_ms: u64,
    pub state_dir: PathBuf,
    /// The controller as the host reaches it (`vipcast ctl --controller`).
    pub controller_url: String,
    /// The controller as agents reach it, inside the lab.
    pub inner_controller_url: String,
    /// The controller's `--store`.
    pub store: String,
    /// The lab's PKI and the host's client identity, when the control plane
    /// runs over mutual TLS (absent with `tls = false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsState>,
    /// The host's veth into the underlay namespace.
    pub host_link: HostLinkState,
    /// Every namespace of the lab.
    pub namespaces: Vec<String>,
    pub nodes: Vec<NodeState>,
    pub processes: Vec<ProcessState>,
}

impl LabState {
    /// The files the host presents to the controller (`None` over plain HTTP).
    pub fn client_files(&self) -> Option<ClientFiles> {
        self.tls.as_ref().map(TlsState::files)
    }
}

/// The lab's certificate authority (`<state dir>/pki`) and the identity
/// the host uses for `ctl`, the drill and registration (`admin:lab`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsState {
    /// The PKI directory (`vipcast pki` layout).
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsState {
    /// `--ca`, `--cert`, `--key` of a client.
    pub fn files(&self) -> ClientFiles {
        ClientFiles { ca: self.ca.clone(), cert: self.cert.clone(), key: self.key.clone() }
    }
}

/// The host end of the management veth and its peer in `<lab>-net`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLinkState {
    /// `vc<6 hex>h`, on the host.
    pub name: String,
    /// `10.254.x.1/30`
    pub addr: String,
    /// `mgmt0`, in `<lab>-net`.
    pub peer: String,
    /// `10.254.x.2/30`
    pub peer_addr: String,
}

/// One node (namespace) of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    /// `underlay`, `chassis`, `replicator`, `vm`, `external`
    pub kind: String,
    pub namespace: String,
    /// `interface address` pairs, e.g. `ul0 10.255.0.10/24`.
    pub addresses: Vec<String>,
    /// Role, chassis, MAC, VPC and the like.
    pub detail: String,
}

/// A daemon the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    /// `controller`, `etcd`, `agent`, `keepalived`, `vrrpd`
    pub role: String,
    /// The node it runs for (`net` for the controller and etcd).
    pub node: String,
    pub namespace: String,
    pub pid: u32,
    /// The program, as started (`argv[0]`).
    pub program: String,
    pub command: String,
    pub log: PathBuf,
}

impl ProcessState {
    /// Whether the process is still the one that was started and has not
    /// exited (not a zombie, same `argv[0]`).
    pub fn is_running(&self) -> bool {
        pid_alive(self.pid) && argv0(self.pid).is_some_and(|a| a == self.program)
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => {
            stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|s| s != 'Z')
        }
        Err(_) => false,
    }
}

fn argv0(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = raw.split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(first).into_owned())
}

/// What `lab status` reports.
#[derive(Debug, Clone)]
pub struct Status {
    pub state: LabState,
    /// (namespace, exists)
    pub namespaces: Vec<(String, bool)>,
    /// (process, running)
    pub processes: Vec<(ProcessState, bool)>,
    /// The controller's `/healthz` answer, or why there is none.
    pub controller: std::result::Result<String, String>,
}

/// The status of lab `name`.
pub fn status(root: &Root, name: &str) -> Result<Status> {
    let Some(state) = root.read(name)? else {
        return Err(not_up(name));
    };
    let existing = crate::teardown::list_namespaces().unwrap_or_default();
    let namespaces = state.namespaces.iter().map(|n| (n.clone(), existing.contains(n))).collect();
    let processes = state.processes.iter().map(|p| (p.clone(), p.is_running())).collect();
    let controller =
        http_get(&format!("{}/healthz", state.controller_url), state.client_files().as_ref(), Duration::from_secs(2));
    Ok(Status { state, namespaces, processes, controller })
}

/// The error for a lab that is not up, mentioning leftovers if there are.
pub fn not_up(name: &str) -> Error {
    let left = crate::teardown::lab_namespaces(name).unwrap_or_default();
    if left.is_empty() {
        Error::NotUp(format!("lab {name:?} is not up"))
    } else {
        Error::NotUp(format!(
            "lab {name:?} is not up, but namespaces are left over ({}): run `vipcast lab down {name}`",
            left.join(", ")
        ))
    }
}

/// The namespace of node `node` of lab `name` (`net` is the underlay), which
/// must exist.
pub fn node_namespace(name: &str, node: &str) -> Result<String> {
    if !crate::config::is_lab_name(name) {
        return Err(Error::NotUp(format!("{name:?} is not a lab name")));
    }
    let ns = crate::plan::namespace(name, node);
    let all = crate::teardown::lab_namespaces(name)?;
    if all.contains(&ns) {
        return Ok(ns);
    }
    if all.is_empty() {
        return Err(not_up(name));
    }
    let nodes: Vec<&str> = all.iter().filter_map(|n| n.strip_prefix(&format!("{name}-"))).collect();
    Err(Error::NotUp(format!("lab {name:?} has no node {node:?} (nodes: {})", nodes.join(", "))))
}

/// A blocking HTTP client (proxies ignored); with `tls`, over mutual TLS
/// (the controller verified against the CA, the client's certificate
/// presented).
pub fn http_client(
    tls: Option<&ClientFiles>,
    timeout: Duration,
) -> std::result::Result<reqwest::blocking::Client, String> {
    let mut builder = reqwest::blocking::Client::builder().no_proxy().timeout(timeout);
    if let Some(files) = tls {
        builder = builder.tls_backend_preconfigured(files.config().map_err(|e| format!("TLS: {e}"))?);
    }
    builder.build().map_err(|e| e.to_string())
}

/// A GET: the body of a 2xx answer, or why not.
pub fn http_get(url: &str, tls: Option<&ClientFiles>, timeout: Duration) -> std::result::Result<String, String> {
    let resp = http_client(tls, timeout)?.get(url).send().map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().map_err(|e| e.to_string())?;
    if status.is_success() { Ok(body) } else { Err(format!("{status}: {body}")) }
}

/// PATCHes `body` (JSON) to `url`; the response body, or the error.
pub fn http_patch_json(
    url: &str,
    tls: Option<&ClientFiles>,
    body: &serde_json::Value,
    timeout: Duration,
) -> std::result::Result<String, String> {
    let resp = http_client(tls, timeout)?.patch(url).json(body).send().map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp.text().map_err(|e| e.to_string())?;
    if status.is_success() { Ok(text) } else { Err(format!("{status}: {text}")) }
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

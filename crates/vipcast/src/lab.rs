//! `vipcast lab`: a whole overlay in network namespaces on this machine, from
//! a TOML file (see the README's "The lab"). The work is in `vipcast-lab`;
//! this file parses flags, prints progress and tables, and handles Ctrl-C.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use vipcast_lab::config::LabConfig;
use vipcast_lab::state::{LabState, Root};
use vipcast_lab::topology::UpOptions;

#[derive(Debug, Args)]
pub struct Lab {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Build the lab described by FILE.toml: namespaces, underlay, VMs,
    /// external clients, the controller, agents and VRRP; register
    /// everything with the controller.
    Up {
        /// The lab file.
        file: PathBuf,
    },
    /// Stop every process of lab NAME and delete its namespaces, host link
    /// and state (also after a crash; nothing to do is not an error).
    Down {
        /// The lab's name.
        name: String,
    },
    /// Show lab NAME: nodes, addresses, daemons, the controller's URL.
    Status {
        /// The lab's name.
        name: String,
        /// Print the state as JSON, with `running` per process.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell exports that point `vipcast ctl` at lab NAME's
    /// controller with the lab's admin identity: `eval "$(vipcast lab env NAME)"`.
    Env {
        /// The lab's name.
        name: String,
    },
    /// Run a command in the namespace of node NODE of lab NAME (`net` is the
    /// underlay namespace holding the controller).
    Exec {
        /// The lab's name.
        name: String,
        /// A chassis, replicator, VM or external client, or `net`.
        node: String,
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
}

pub fn run(lab: Lab) -> anyhow::Result<()> {
    let root = Root::default();
    match lab.what {
        What::Up { file } => up(&root, &file),
        What::Down { name } => down(&root, &name),
        What::Status { name, json } => status(&root, &name, json),
        What::Exec { name, node, command } => exec(&name, &node, &command),
        What::Env { name } => env(&root, &name),
    }
}

fn progress(line: &str) {
    crate::progress::line(line);
}

fn up(root: &Root, file: &std::path::Path) -> anyhow::Result<()> {
    let cfg = LabConfig::load(file)?;
    let exe = std::env::current_exe().context("cannot find the vipcast binary")?;
    let cancel = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(cancel.clone());
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let opts = UpOptions { root, exe: &exe, file: Some(&file), progress: &progress, cancel: Some(&cancel) };
    let state = vipcast_lab::topology::up(&cfg, opts)?;
    crate::progress::finish();
    print_summary(&state, None);
    let how = if state.tls.is_some() { "mutual TLS" } else { "plain HTTP" };
    println!("controller: {} ({how})    ctl: eval \"$(vipcast lab env {})\"", state.controller_url, state.name);
    println!("state: {}  logs: {}", root.state_file(&state.name).display(), state.state_dir.display());
    Ok(())
}

/// The first Ctrl-C asks the builder to stop and tear down; a second one
/// exits at once.
fn watch_ctrl_c(cancel: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            while tokio::signal::ctrl_c().await.is_ok() {
                if cancel.swap(true, Ordering::Relaxed) {
                    std::process::exit(130);
                }
                eprintln!("interrupted: tearing down (Ctrl-C again to quit at once; then run `vipcast lab down`)");
            }
        });
    });
}

fn down(root: &Root, name: &str) -> anyhow::Result<()> {
    let report = vipcast_lab::teardown::down(root, name, &progress)?;
    if report.is_empty() {
        eprintln!("lab {name}: nothing to do (not up)");
    } else {
        eprintln!("lab {name} is down");
    }
    Ok(())
}

fn status(root: &Root, name: &str, json: bool) -> anyhow::Result<()> {
    let s = vipcast_lab::state::status(root, name)?;
    let running: Vec<bool> = s.processes.iter().map(|(_, r)| *r).collect();
    if json {
        let mut v = serde_json::to_value(&s.state)?;
        if let Some(procs) = v.get_mut("processes").and_then(|p| p.as_array_mut()) {
            for (p, r) in procs.iter_mut().zip(&running) {
                p["running"] = serde_json::json!(r);
            }
        }
        v["controller_healthy"] = serde_json::json!(s.controller.is_ok());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_summary(&s.state, Some(&running));
        match &s.controller {
            Ok(body) => println!("controller: {}  healthy {}", s.state.controller_url, body.trim()),
            Err(e) => println!("controller: {}  NOT ANSWERING: {e}", s.state.controller_url),
        }
    }
    let missing: Vec<&str> = s.namespaces.iter().filter(|(_, ok)| !ok).map(|(n, _)| n.as_str()).collect();
    let dead: Vec<String> =
        s.processes.iter().filter(|(_, r)| !r).map(|(p, _)| format!("{} {} (pid {})", p.role, p.node, p.pid)).collect();
    if !missing.is_empty() || !dead.is_empty() || s.controller.is_err() {
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!("namespaces missing: {}", missing.join(", ")));
        }
        if !dead.is_empty() {
            why.push(format!("not running: {}", dead.join(", ")));
        }
        if let Err(e) = &s.controller {
            why.push(format!("controller not answering: {e}"));
        }
        bail!("lab {name} is degraded: {}", why.join("; "));
    }
    Ok(())
}

/// `export VIPCAST_CONTROLLER=... VIPCAST_CA=... VIPCAST_CERT=... VIPCAST_KEY=...`
fn env(root: &Root, name: &str) -> anyhow::Result<()> {
    let Some(state) = root.read(name)? else {
        return Err(vipcast_lab::state::not_up(name).into());
    };
    println!("export VIPCAST_CONTROLLER={}", shell_word(&state.controller_url));
    match state.client_files() {
        Some(f) => {
            for (var, path) in [("VIPCAST_CA", &f.ca), ("VIPCAST_CERT", &f.cert), ("VIPCAST_KEY", &f.key)] {
                println!("export {var}={}", shell_word(&path.to_string_lossy()));
            }
        }
        None => println!("unset VIPCAST_CA VIPCAST_CERT VIPCAST_KEY"),
    }
    Ok(())
}

/// `s` quoted for a POSIX shell.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._:-".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn exec(name: &str, node: &str, command: &[OsString]) -> anyhow::Result<()> {
    let ns = vipcast_lab::state::node_namespace(name, node)?;
    // Replaces this process: the command's exit status is ours.
    let err = std::process::Command::new("ip").args(["netns", "exec", &ns]).args(command).exec();
    bail!("cannot run ip netns exec {ns}: {err}")
}

/// Nodes and daemons as tables, on stdout.
fn print_summary(state: &LabState, running: Option<&[bool]>) {
    let mut nodes = Table::new();
    nodes.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    nodes.set_header(["node", "kind", "namespace", "addresses", "detail"]);
    for n in &state.nodes {
        nodes.add_row([n.name.clone(), n.kind.clone(), n.namespace.clone(), n.addresses.join("\n"), n.detail.clone()]);
    }
    nodes.add_row([
        "(host)".to_string(),
        "host link".to_string(),
        "-".to_string(),
        format!("{} {}", state.host_link.name, state.host_link.addr),
        format!("<-> {} {}", state.host_link.peer, state.host_link.peer_addr),
    ]);
    println!("{nodes}");
    let mut procs = Table::new();
    procs.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    let mut header = vec!["process", "node", "namespace", "pid", "log"];
    if running.is_some() {
        header.push("running");
    }
    procs.set_header(header);
    for (i, p) in state.processes.iter().enumerate() {
        let mut row =
            vec![p.role.clone(), p.node.clone(), p.namespace.clone(), p.pid.to_string(), p.log.display().to_string()];
        if let Some(r) = running {
            row.push(if r.get(i).copied().unwrap_or(false) { "yes".into() } else { "NO".into() });
        }
        procs.add_row(row);
    }
    println!("{procs}");
}

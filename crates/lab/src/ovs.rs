//! A private Open vSwitch (userspace `netdev` datapath) per chassis
//! namespace, after the recipe in `docs/ovs-notes.md`.
//!
//! Every instance has a run directory of its own (the database, the sockets,
//! the pidfiles and the logs) and every tool is pointed at it twice: by
//! explicit paths and by `OVS_RUNDIR`/`OVS_DBDIR`/`OVS_LOGDIR`/
//! `OVS_SYSCONFDIR`, so no command ever reaches another chassis' switch or a
//! host-wide one. The daemons run in the foreground (no `--detach`): the lab
//! starts them like its other daemons and records them in its state.
//!
//! Stopping is [`Ovs::stop`]: `ovs-appctl exit --cleanup` to `ovs-vswitchd`
//! (a plain exit or a signal leaves its tap devices behind), `exit` to
//! `ovsdb-server`, then SIGKILL by pidfile to whichever is still running.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::plan::{OPENFLOW_LISTEN, OVS_GRE_PORT, OVS_INT_BRIDGE, OVS_PHY_BRIDGE, OVS_VXLAN_PORT, UNDERLAY_IF};
use crate::state::pid_alive;
use crate::{Error, Result, ip, run};

/// The Open_vSwitch database schema (Debian's openvswitch-common).
pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// The programs an OVS chassis needs (from `PATH`).
pub const TOOLS: &[&str] = &["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-appctl", "ethtool"];
/// OpenFlow port numbers requested for the tunnel ports (the numbering of
/// the recipe), so that they are the same on every OVS chassis.
pub const GRE_OFPORT: u16 = 1;
/// See [`GRE_OFPORT`].
pub const VXLAN_OFPORT: u16 = 2;
/// The key in a VM port's `Interface` `external_ids` that names its port.
pub const PORT_EXTERNAL_ID: &str = "vipcast-port";
/// How long a daemon may take to exit once told to.
const EXIT_WAIT: Duration = Duration::from_secs(3);

/// The programs of [`TOOLS`] that are not in `PATH`.
pub fn missing_tools() -> Vec<&'static str> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    TOOLS.iter().copied().filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())).collect()
}

/// The OVS run directories (`ovs-*`) in a lab's state directory.
pub fn run_dirs(state_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(state_dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ovs-") && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// `ethtool -K DEV tx off` in namespace `ns`: the kernel then finishes the
/// checksums of what it sends there (a veth otherwise passes them on
/// unfinished, and Open vSwitch reads them so through AF_PACKET).
pub fn tx_checksum_off(ns: &str, dev: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"])).map(|_| ())
}

/// One chassis' Open vSwitch, known by its run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovs {
    dir: PathBuf,
}

impl Ovs {
    /// The instance whose run directory is `dir` (nothing is created).
    pub fn new(dir: impl Into<PathBuf>) -> Ovs {
        Ovs { dir: dir.into() }
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// The environment that points every OVS program at this instance.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"].into_iter().map(|k| (k, self.dir.clone())).collect()
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env());
        cmd
    }

    /// Creates the run directory and an empty database in it.
    pub fn create_db(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::Lab(format!("cannot create {}: {e}", self.dir.display())))?;
        run(self.command("ovsdb-tool").args(["create", &self.path("conf.db"), SCHEMA])).map(|_| ())
    }

    /// Arguments of `ovsdb-server` (foreground, logging to stderr).
    pub fn server_args(&self) -> Vec<OsString> {
        [
            self.path("conf.db"),
            format!("--remote=punix:{}", self.path("db.sock")),
            format!("--pidfile={}", self.path("ovsdb-server.pid")),
            format!("--unixctl={}", self.path("ovsdb-server.ctl")),
        ]
        .into_iter()
        .map(OsString::from)
        .collect()
    }

    /// Arguments of `ovs-vswitchd` (foreground, logging to stderr).
    pub fn vswitchd_args(&self) -> Vec<OsString> {
        [
            format!("unix:{}", self.path("db.sock")),
            format!("--pidfile={}", self.path("ovs-vswitchd.pid")),
            format!("--unixctl={}", self.path("ovs-vswitchd.ctl")),
        ]
        .into_iter()
        .map(OsString::from)
        .collect()
    }

    /// Whether `ovsdb-server` has made its socket.
    pub fn db_ready(&self) -> bool {
        self.dir.join("db.sock").exists()
    }

    /// Whether `ovs-vswitchd` answers on its control socket.
    pub fn vswitchd_ready(&self) -> bool {
        self.dir.join("ovs-vswitchd.ctl").exists() && self.appctl(&["version"]).is_ok()
    }

    /// Initialises the database; one handler and one revalidator thread
    /// (they must be set before `ovs-vswitchd` starts).
    pub fn init_db(&self) -> Result<()> {
        self.vsctl(&["--no-wait", "init"])?;
        self.vsctl(&[
            "--no-wait",
            "set",
            "open_vswitch",
            ".",
            "other_config:n-handler-threads=1",
            "other_config:n-revalidator-threads=1",
        ])
        .map(|_| ())
    }

    /// `ovs-vsctl --db=unix:<dir>/db.sock --timeout=10 ARGS...`
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db=unix:{}", self.path("db.sock"));
        run(self.command("ovs-vsctl").args([db.as_str(), "--timeout=10"]).args(args))
    }

    /// `ovs-appctl -t <dir>/ovs-vswitchd.ctl ARGS...`
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        let target = self.path("ovs-vswitchd.ctl");
        run(self.command("ovs-appctl").args(["--timeout=5", "-t", &target]).args(args))
    }

    /// `br-phy` (netdev) with the underlay veth `ul0` as its port, its own
    /// MAC `mac`, and the chassis' underlay address `addr` (with prefix)
    /// moved onto it: tunnels of the userspace datapath leave through the
    /// bridge whose local port has the route to the remote. `ul0` ignores
    /// ARP for the address (`arp_ignore=1`: the kernel sees every frame on
    /// `ul0` too and would answer with `ul0`'s MAC) and has no IPv6.
    pub fn add_phy_bridge(&self, ns: &str, mac: &str, addr: &str) -> Result<()> {
        // Up before it becomes a port: the netdev datapath cannot open a link that is down.
        ip(&["-n", ns, "link", "set", UNDERLAY_IF, "up"])?;
        self.vsctl(&[
            "--",
            "add-br",
            OVS_PHY_BRIDGE,
            "--",
            "set",
            "bridge",
            OVS_PHY_BRIDGE,
            "datapath_type=netdev",
            &format!("other_config:hwaddr={mac}"),
            "--",
            "add-port",
            OVS_PHY_BRIDGE,
            UNDERLAY_IF,
        ])?;
        for setting in
            [format!("net.ipv4.conf.{UNDERLAY_IF}.arp_ignore=1"), format!("net.ipv6.conf.{UNDERLAY_IF}.disable_ipv6=1")]
        {
            run(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", &setting]))?;
        }
        // No address may stay on ul0 (the kernel must not take the tunnels' packets).
        ip(&["-n", ns, "addr", "flush", "dev", UNDERLAY_IF])?;
        ip(&["-n", ns, "addr", "add", addr, "dev", OVS_PHY_BRIDGE])?;
        ip(&["-n", ns, "link", "set", OVS_PHY_BRIDGE, "up"])?;
        Ok(())
    }

    /// `br-int` in one transaction: netdev datapath, `fail_mode=secure`,
    /// OpenFlow 1.3 only, datapath id `dpid`, in-band control off, controller
    /// [`OPENFLOW_LISTEN`] out of band with reconnects within a second, the
    /// flow-based tunnel ports `vc-vxlan` and `vc-gre` from `local_ip`, and
    /// `ports` (interface name, port name): the VMs' veth ends, each with
    /// `external_ids:vipcast-port=<port>`. The switch never runs without its
    /// controller or in standalone mode, and connects to it at once if the
    /// agent listens already.
    pub fn add_int_bridge(&self, local_ip: Ipv4Addr, dpid: u64, ports: &[(String, String)]) -> Result<()> {
        let local = format!("options:local_ip={local_ip}");
        let mut args: Vec<String> = [
            "--",
            "add-br",
            OVS_INT_BRIDGE,
            "--",
            "set",
            "bridge",
            OVS_INT_BRIDGE,
            "datapath_type=netdev",
            "fail_mode=secure",
            "protocols=OpenFlow13",
            &format!("other_config:datapath-id={dpid:016x}"),
            "other_config:disable-in-band=true",
            "--",
            "set-controller",
            OVS_INT_BRIDGE,
            &format!("tcp:{OPENFLOW_LISTEN}"),
            "--",
            "set",
            "controller",
            OVS_INT_BRIDGE,
            "connection-mode=out-of-band",
            "max_backoff=1000",
            "--",
            "add-port",
            OVS_INT_BRIDGE,
            OVS_VXLAN_PORT,
            "--",
            "set",
            "interface",
            OVS_VXLAN_PORT,
            "type=vxlan",
            &format!("ofport_request={VXLAN_OFPORT}"),
            "options:remote_ip=flow",
            "options:key=flow",
            &local,
            "options:dst_port=4789",
            "--",
            "add-port",
            OVS_INT_BRIDGE,
            OVS_GRE_PORT,
            "--",
            "set",
            "interface",
            OVS_GRE_PORT,
            "type=gre",
            &format!("ofport_request={GRE_OFPORT}"),
            "options:remote_ip=flow",
            "options:key=flow",
            &local,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (dev, port) in ports {
            args.extend(
                [
                    "--",
                    "add-port",
                    OVS_INT_BRIDGE,
                    dev,
                    "--",
                    "set",
                    "interface",
                    dev,
                    &format!("external_ids:{PORT_EXTERNAL_ID}={port}"),
                ]
                .iter()
                .map(|s| s.to_string()),
            );
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.vsctl(&args).map(|_| ())
    }

    /// Seeds the tunnel neighbour cache: `ip` (on the underlay) is at `mac`
    /// (`ovs-appctl tnl/neigh/set br-phy IP MAC`), so the first packet to a
    /// remote chassis is not dropped while OVS resolves it.
    pub fn set_tunnel_neighbour(&self, ip: Ipv4Addr, mac: &str) -> Result<()> {
        self.appctl(&["tnl/neigh/set", OVS_PHY_BRIDGE, &ip.to_string(), mac]).map(|_| ())
    }

    /// The ports of `bridge` (`ovs-vsctl list-ports`).
    pub fn list_ports(&self, bridge: &str) -> Result<Vec<String>> {
        Ok(self.vsctl(&["list-ports", bridge])?.lines().map(str::to_string).collect())
    }

    /// Whether `br-int` is connected to its controller (the agent).
    pub fn controller_connected(&self) -> bool {
        self.vsctl(&["get", "controller", OVS_INT_BRIDGE, "is_connected"]).is_ok_and(|s| s.trim() == "true")
    }

    /// The pid in `<dir>/<daemon>.pid`, if that process runs and is this
    /// instance's (its command line names the run directory: a pidfile can
    /// outlive its process and the pid be reused).
    pub fn pid(&self, daemon: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.join(format!("{daemon}.pid"))).ok()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (pid_alive(pid) && String::from_utf8_lossy(&cmdline).contains(&*self.dir.to_string_lossy())).then_some(pid)
    }

    /// Stops the instance: `ovs-appctl exit --cleanup` to `ovs-vswitchd`
    /// (removing its tap devices), then `exit` to `ovsdb-server`; a daemon
    /// still running [`EXIT_WAIT`] later (or without a control socket) is
    /// killed by its pidfile. Returns how many daemons were running. The run
    /// directory is left (it is in the lab's state directory).
    pub fn stop(&self) -> usize {
        let mut stopped = 0;
        for (daemon, exit) in [("ovs-vswitchd", &["exit", "--cleanup"][..]), ("ovsdb-server", &["exit"][..])] {
            let Some(pid) = self.pid(daemon) else { continue };
            stopped += 1;
            let target = self.path(&format!("{daemon}.ctl"));
            let told = run(self.command("ovs-appctl").args(["--timeout=5", "-t", &target]).args(exit)).is_ok();
            if !told || !wait_exit(pid, EXIT_WAIT) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                wait_exit(pid, EXIT_WAIT);
            }
        }
        stopped
    }
}

/// Waits up to `limit` for `pid` to exit (a zombie counts as exited);
/// returns whether it did.
fn wait_exit(pid: u32, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while pid_alive(pid) {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

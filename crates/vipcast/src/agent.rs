//! `vipcast agent`: flags -> agent config -> run.

use std::net::IpAddr;

use clap::Args;
use vipcast_model::Role;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This chassis' name.
    #[arg(long)]
    chassis: String,
    /// This chassis' tunnel endpoint address.
    #[arg(long)]
    underlay_ip: IpAddr,
    /// Controller URL.
    #[arg(long, env = "VIPCAST_CONTROLLER")]
    controller: String,
    /// hypervisor or gateway.
    #[arg(long, default_value = "hypervisor", value_parser = parse_role)]
    role: Role,
    /// Run inside this network namespace (as made by `ip netns add`).
    #[arg(long)]
    netns: Option<String>,
    /// Sniff gratuitous ARP / unsolicited NA on VM ports and claim VIPs.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sniff: bool,
    /// Announcements sent into each local VM port when a VIP moves (0: none).
    #[arg(long, default_value_t = 3)]
    announce_burst: u32,
    /// Platform-assisted handover: when a VRRP master's port goes down, send
    /// the priority-0 advert it can no longer send.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    assist: bool,
    /// Liveness heartbeat interval, ms (UDP to the controller's port number).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(5..=10_000))]
    heartbeat_ms: u64,
    /// What programs this chassis: kernel (bridge, VXLAN device, FDB and
    /// neighbour entries over rtnetlink) or ovs (a local Open vSwitch that
    /// connects to the agent as its OpenFlow controller).
    #[arg(long, default_value = "kernel", value_parser = parse_dataplane)]
    dataplane: vipcast_model::Dataplane,
    /// With --dataplane ovs: where to accept the switch's OpenFlow connection.
    #[arg(long, default_value = "127.0.0.1:6653")]
    openflow_listen: std::net::SocketAddr,
    /// With --dataplane ovs on a gateway: the switch's database, where the
    /// VPCs' router ports are added (as `ovs-vsctl --db=` takes it).
    #[arg(long, default_value = "unix:/var/run/openvswitch/db.sock")]
    ovsdb: String,
    /// Peer liveness: watch the chassis of the VRRP masters local VMs
    /// listen to directly (UDP echo over the underlay), and speak for a
    /// master whose chassis stops answering once its adverts stop, without
    /// waiting for the controller; and answer other agents' echoes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    peer_liveness: bool,
    /// UDP port of the peer echo, on the underlay address (the same on every chassis).
    #[arg(long, default_value_t = vipcast_agent::peer::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    peer_port: u16,
    /// Peer echo interval, ms.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    peer_interval_ms: u64,
    /// Intervals without an answer after which a peer is down.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=50))]
    peer_multiplier: u32,
    /// Serve `/metrics` (Prometheus text: drift repaired, reconciles, peer
    /// liveness, assisted handovers) and `/healthz` here.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    /// This chassis' heartbeat key (`vipcast pki issue --role agent` writes
    /// NAME.hbkey beside the certificate; that one is used when this is not
    /// given): heartbeats are signed.
    #[arg(long, env = "VIPCAST_HEARTBEAT_KEY")]
    heartbeat_key: Option<std::path::PathBuf>,
}

fn parse_dataplane(s: &str) -> Result<vipcast_model::Dataplane, String> {
    match s {
        "kernel" => Ok(vipcast_model::Dataplane::Kernel),
        "ovs" => Ok(vipcast_model::Dataplane::Ovs),
        other => Err(format!("dataplane {other:?} must be kernel or ovs")),
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "hypervisor" => Ok(Role::Hypervisor),
        "gateway" => Ok(Role::Gateway),
        other => Err(format!("role {other:?} must be hypervisor or gateway")),
    }
}

impl AgentArgs {
    /// The namespace to enter before any thread starts.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }
}

pub async fn run(a: AgentArgs) -> anyhow::Result<()> {
    let tls = a.tls.files()?;
    let key_file = a.heartbeat_key.clone().or_else(|| {
        let beside = tls.as_ref()?.cert.with_extension("hbkey");
        beside.exists().then_some(beside)
    });
    let heartbeat_key = match key_file {
        Some(f) => Some(vipcast_tls::heartbeat::read_secret(&f)?),
        None => None,
    };
    let security = vipcast_agent::Security { tls, heartbeat_key };
    let cfg = vipcast_agent::Config {
        controller: a.controller,
        chassis: a.chassis,
        underlay_ip: a.underlay_ip,
        role: a.role,
        sniff: a.sniff,
        announce_burst: a.announce_burst,
        assist: a.assist,
        heartbeat: std::time::Duration::from_millis(a.heartbeat_ms),
        dataplane: a.dataplane,
        openflow_listen: a.openflow_listen,
        ovsdb: a.ovsdb,
        peer: vipcast_agent::peer::PeerConfig {
            enabled: a.peer_liveness,
            port: a.peer_port,
            interval: std::time::Duration::from_millis(a.peer_interval_ms),
            multiplier: a.peer_multiplier,
        },
        metrics_listen: a.metrics_listen,
    };
    vipcast_agent::run_with(cfg, security, std::future::pending()).await
}

//! `vipcast`: one binary, a subcommand per role. This file only parses flags
//! and hands over to the crates that do the work.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// mimalloc returns freed memory to the system far better than glibc's
/// allocator under many connections (measured with `vipcast bench
/// control-plane`: see ARCHITECTURE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent;
mod bench;
mod config_file;
mod controller;
mod ctl;
mod dissect;
mod drill;
mod lab;
mod pki;
mod progress;
mod tls_args;

/// Highly available virtual IPs for VXLAN overlays.
#[derive(Debug, Parser)]
#[command(name = "vipcast", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: REST API, watch streams, VIP ownership.
    Controller {
        /// Address to serve the API on.
        #[arg(long, default_value = "127.0.0.1:7600")]
        listen: SocketAddr,
        /// file:DIR (embedded, one controller) or etcd://HOST:PORT[,HOST:PORT...]
        #[arg(long, default_value = "file:./vipcast-data")]
        store: controller::StoreSpec,
        /// A chassis whose agent sent no heartbeat (UDP, same port number as
        /// the API) for this long is declared dead.
        #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(20..=60_000))]
        liveness_timeout_ms: u64,
        #[command(flatten)]
        tls: controller::TlsFlags,
        #[command(flatten)]
        limits: controller::LimitArgs,
        /// Start even from a store that fails verification, dropping what
        /// cannot be read, and say what was dropped: a store file that is
        /// empty or refused by redb is moved aside and an empty store
        /// started, undecodable records and objects are deleted. Without it,
        /// such a store stops the controller with an error and is left as
        /// it is.
        #[arg(long)]
        store_recover: bool,
    },
    /// Run a chassis agent: program this chassis' kernel data plane from the
    /// controller, sniff VIP announcements on VM ports.
    Agent(agent::AgentArgs),
    /// Benchmarks of the real components.
    Bench(bench::Bench),
    /// Talk to a controller: create, list, show and delete objects.
    Ctl(ctl::Ctl),
    /// Run a BUM replicator: copy VPC broadcast/multicast to member chassis,
    /// sniff VIP announcements, answer health probes.
    Replicator(vipcast_replicator::cli::Args),
    /// Decode a pcap file (tcpdump -w) with vipcast's codecs: VRRP v2/v3,
    /// ARP and gratuitous ARP, neighbour discovery, VXLAN, GRE, GRE-in-UDP.
    Dissect {
        /// The capture file.
        file: PathBuf,
        /// Accept VRRPv3 unicast checksums computed over the multicast group
        /// (keepalived's old_unicast_checksum).
        #[arg(long)]
        legacy_unicast_checksum: bool,
    },
    /// Certificates for mutual TLS: `init DIR` (a CA), `issue DIR --role R
    /// --name N [--san ADDR]` (a certificate naming its holder).
    Pki(pki::Pki),
    /// Network-namespace labs: `up FILE.toml`, `down NAME`, `status NAME`,
    /// `exec NAME NODE -- CMD...` (as root).
    Lab(lab::Lab),
    /// VRRP v2/v3 daemon configured by a keepalived.conf subset:
    /// `-f keepalived.conf [--check]`, `--show-status FILE`.
    Vrrpd(vipcast_vrrpd::Args),
    /// Failover drill on a lab's VIP: inject a fault into its master N times,
    /// measure the outage with 1000 probes/s and where the time went, and
    /// compare with the same VMs on one plain bridge (as root).
    Drill(drill::DrillArgs),
    /// Build a default lab, run failover drills against a native-L2 baseline,
    /// print the table, write an SVG timeline, tear down (as root, < 3 min).
    Demo(drill::DemoArgs),
    /// The drills' prober (run inside a lab namespace).
    #[command(hide = true)]
    Probe(drill::ProbeArgs),
    /// The drills' responder (run inside a lab namespace).
    #[command(hide = true)]
    ProbeResponder(drill::ResponderArgs),
    /// Send a gratuitous ARP / unsolicited NA for an address (run inside a
    /// lab namespace).
    #[command(hide = true)]
    Announce(drill::AnnounceArgs),
    /// The database workload's client (run inside a lab namespace).
    #[command(hide = true)]
    WorkloadClient(drill::WorkloadClientArgs),
    /// The payment service's backend (run inside a lab namespace).
    #[command(hide = true)]
    PaymentBackend(drill::PaymentBackendArgs),
    /// The payment workload's client (run inside a lab namespace).
    #[command(hide = true)]
    PaymentClient(drill::PaymentClientArgs),
}

/// The command line, with a daemon's `--config FILE` read into it (see
/// [`config_file`]); exits on `--help`, on errors and after `--check-config`.
fn parse_cli() -> Cli {
    let mut cmd = Cli::command();
    for d in config_file::DAEMONS {
        cmd = cmd.mut_subcommand(d, |c| {
            c.args_override_self(true)
                .arg(
                    clap::Arg::new("config")
                        .long("config")
                        .value_name("FILE")
                        .help("Settings from this TOML file (keys: the long flags, with _ for -); flags given too win"),
                )
                .arg(
                    clap::Arg::new("check_config")
                        .long("check-config")
                        .action(clap::ArgAction::SetTrue)
                        .help("Validate the settings, print each with where it came from, and exit"),
                )
        });
    }
    let ex = match config_file::expand(&cmd, std::env::args_os().collect()) {
        Ok(ex) => ex,
        Err(e) => {
            eprintln!("vipcast: {e}");
            std::process::exit(2);
        }
    };
    let m = match cmd.try_get_matches_from_mut(&ex.args) {
        Ok(m) => m,
        Err(e) => {
            if let Some(why) = config_file::explain(&e, &ex.origins) {
                eprintln!("vipcast: {why}");
            }
            e.exit();
        }
    };
    if ex.check {
        if let Some((name, sm)) = m.subcommand()
            && let Some(sub) = cmd.find_subcommand(name)
        {
            print!("{}", config_file::describe(sub, sm, &ex.origins));
            println!("# configuration ok");
        }
        std::process::exit(0);
    }
    Cli::from_arg_matches(&m).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse_cli();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VIPCAST_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: daemons' logs are files that drills parse.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Dissect { file, legacy_unicast_checksum } => dissect::run(&file, legacy_unicast_checksum),
        Command::Controller { listen, store, liveness_timeout_ms, limits, tls, store_recover } => {
            runtime().and_then(|rt| {
                let liveness_timeout = std::time::Duration::from_millis(liveness_timeout_ms);
                rt.block_on(controller::run(listen, store, liveness_timeout, limits, tls, store_recover))
            })
        }
        Command::Agent(a) => match a.netns().map(vipcast_sys::enter_netns) {
            Some(Err(e)) => Err(anyhow::anyhow!("entering network namespace {:?}: {e}", a.netns().unwrap_or_default())),
            _ => runtime().and_then(|rt| rt.block_on(agent::run(a))),
        },
        Command::Bench(b) => runtime().and_then(|rt| rt.block_on(bench::run(b))),
        Command::Ctl(c) => runtime().and_then(|rt| rt.block_on(ctl::run(c))),
        Command::Lab(l) => lab::run(l),
        Command::Pki(p) => pki::run(p),
        Command::Replicator(r) => vipcast_replicator::cli::main(r),
        Command::Vrrpd(a) => vipcast_vrrpd::main(a),
        Command::Drill(d) => drill::drill(d),
        Command::Demo(d) => drill::demo(d),
        Command::Probe(p) => drill::probe(p),
        Command::ProbeResponder(r) => drill::respond(r),
        Command::WorkloadClient(w) => drill::workload_client(w),
        Command::PaymentBackend(p) => drill::payment_backend(p),
        Command::PaymentClient(p) => drill::payment_client(p),
        Command::Announce(a) => drill::announce(a),
    };
    progress::finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vipcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

//! `vipcast drill`, `vipcast demo`, and the hidden helpers they run inside
//! lab namespaces (`probe`, `probe-responder`, `announce`). The work is in
//! `vipcast-drill`; this file parses flags, prints, and handles Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use vipcast_drill::{Fault, Options, Variants, report};
use vipcast_lab::state::Root;

/// `vipcast drill`
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The lab (as `vipcast lab up` named it).
    #[arg(long)]
    lab: String,
    /// The VIP: its name or its address.
    #[arg(long)]
    vip: String,
    /// link-down (the master VM's eth0 down), vm-freeze (SIGSTOP to every
    /// process of the master VM), chassis-down (the master's chassis cut from
    /// the underlay), replicator-down (the replicator in use killed),
    /// controller-down (the controller killed, then the master's eth0 down;
    /// restarted before the link comes back).
    #[arg(long, default_value = "link-down")]
    fault: Fault,
    /// Runs per variant (overlay, baseline).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The node the prober runs in: a VM (default: one of the VIP's VPC that
    /// is not a member) or an external client.
    #[arg(long)]
    from: Option<String>,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
    /// Write an SVG timeline of the median runs to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Skip the native-L2 baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Platform-assisted handover for the overlay runs: on, off, or both
    /// (off then on, compared in one drill); the VPC is switched through
    /// the API and set back afterwards. Default: as the VPC is set.
    #[arg(long)]
    assist: Option<vipcast_drill::Assist>,
    /// UDP port of the responders.
    #[arg(long, default_value_t = 7999)]
    port: u16,
    /// Microseconds between probes.
    #[arg(long, default_value_t = 1000)]
    interval_us: u64,
    /// Chaos for SECONDS instead of a drill: link-down failovers back to
    /// back while the controller, the replicators and the agents of chassis
    /// without a member are killed (SIGKILL) and restarted at random; after
    /// each failover the invariants are checked (one member holds the VIP,
    /// every chassis forwards to the owner, the history has no gap or
    /// repeat). Exits 1 on any violation.
    #[arg(long, value_name = "SECONDS", conflicts_with_all = ["fault", "runs", "svg", "no_baseline", "assist"])]
    chaos: Option<u64>,
    /// Seed of the chaos' random choices (default: from the clock).
    #[arg(long, requires = "chaos")]
    seed: Option<u64>,
    /// Drill the VIP's workload instead of UDP probes: `mariadb` (the lab's
    /// `[[vip]] workload = "mariadb"` pair: a client writes through the VIP;
    /// every acknowledged write must be stored after each failover) or
    /// `http` (a `workload = "http"` payment service: every paid key must be
    /// stored once, with the id the client was given). Faults:
    /// link-down, vm-freeze, service-kill (kill -9 mariadbd on the master),
    /// chassis-down, controller-down. Exits 1 unless every run passed.
    #[arg(long, value_parser = ["mariadb", "http"], conflicts_with_all = ["chaos", "svg"])]
    workload: Option<String>,
    /// Negative control: let the master fall back to asynchronous
    /// replication before each fault (semi-sync timeout 500 ms, the
    /// standby's IO thread stopped); the drill must report lost writes.
    #[arg(long, requires = "workload", hide = true)]
    unsafe_async_fallback: bool,
}

/// `vipcast payment-backend` (hidden): the payment service's backend.
#[derive(Debug, Args)]
pub struct PaymentBackendArgs {
    #[arg(long)]
    listen: SocketAddr,
    /// The database VIP:PORT.
    #[arg(long)]
    db: SocketAddr,
    /// A file with DB_USER= and DB_PASSWORD= lines (a database member's db.env).
    #[arg(long)]
    credentials: PathBuf,
    /// Who answers (stored with each payment).
    #[arg(long)]
    name: String,
}

/// `vipcast payment-client` (hidden): pays through the service's VIP.
#[derive(Debug, Args)]
pub struct PaymentClientArgs {
    /// VIP:PORT
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, default_value_t = 4)]
    workers: u32,
}

/// `vipcast workload-client` (hidden): the database workload's client.
#[derive(Debug, Args)]
pub struct WorkloadClientArgs {
    /// VIP:PORT
    #[arg(long)]
    addr: SocketAddr,
    /// A file with DB_USER= and DB_PASSWORD= lines (a member's db.env).
    #[arg(long)]
    credentials: PathBuf,
    #[arg(long, default_value_t = 4)]
    workers: u32,
}

/// `vipcast demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Runs per fault and variant.
    #[arg(long, default_value_t = 6)]
    runs: usize,
    /// Where to write the SVG timeline.
    #[arg(long, default_value = "vipcast-demo.svg")]
    svg: PathBuf,
    /// Also write the whole report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the results into FILE between its `vipcast demo` markers
    /// (e.g. docs/BENCHMARKS.md).
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// The control plane over mutual TLS (`on`, the lab's default) or plain
    /// HTTP (`off`), to compare.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    tls: String,
    /// The workloads instead (labs/pay.toml): a semi-synchronous MariaDB
    /// pair behind a VIP with a client writing through it, and a payment
    /// service writing through that VIP with a client paying; link-down,
    /// vm-freeze and service-kill, assisted handover off and on, the
    /// database also against the native-L2 baseline; outage and
    /// acknowledged writes or payments lost (0) per row.
    #[arg(long)]
    workloads: bool,
}

/// `vipcast probe` (hidden): the drill's prober.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// VIP:PORT
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, default_value_t = 1000)]
    interval_us: u64,
    /// Stop after this many requests (default: run until killed).
    #[arg(long)]
    count: Option<u64>,
}

/// `vipcast probe-responder` (hidden): answers probes with its name.
#[derive(Debug, Args)]
pub struct ResponderArgs {
    #[arg(long)]
    listen: SocketAddr,
    /// Who answers (default: the host name).
    #[arg(long)]
    name: Option<String>,
}

/// `vipcast announce` (hidden): gratuitous ARP / unsolicited NA for an address.
#[derive(Debug, Args)]
pub struct AnnounceArgs {
    #[arg(long, default_value = "eth0")]
    dev: String,
    #[arg(long)]
    ip: IpAddr,
}

fn progress(line: &str) {
    crate::progress::line(line);
}

/// The first Ctrl-C asks the drill to undo its fault and stop; a second one
/// exits at once.
fn watch_ctrl_c() -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            while tokio::signal::ctrl_c().await.is_ok() {
                if flag.swap(true, Ordering::Relaxed) {
                    std::process::exit(130);
                }
                eprintln!("interrupted: undoing the fault and tearing down (Ctrl-C again to quit at once)");
            }
        });
    });
    cancel
}

pub fn drill(a: DrillArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the vipcast binary")?;
    let cancel = watch_ctrl_c();
    let target = vipcast_drill::lab::resolve(&Root::default(), &a.lab, &a.vip, a.from.as_deref())?;
    let opts = Options {
        exe,
        runs: a.runs.max(1),
        port: a.port,
        interval: Duration::from_micros(a.interval_us.max(100)),
        progress: &progress,
        cancel: Some(&cancel),
    };
    if let Some(secs) = a.chaos {
        let seed = a.seed.unwrap_or_else(vipcast_api::now_ms);
        let c = vipcast_drill::chaos::ChaosOptions { duration: Duration::from_secs(secs), seed };
        let report = vipcast_drill::chaos::chaos(&target, &opts, &c)?;
        crate::progress::finish();
        if a.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        eprintln!("{}", report.summary());
        if !report.violations.is_empty() {
            anyhow::bail!("{} invariant violations", report.violations.len());
        }
        return Ok(());
    }
    let variants = Variants { baseline: !a.no_baseline, assist: a.assist };
    if let Some(workload) = a.workload.as_deref() {
        let (json, table, passed) = if workload == "http" {
            let r = vipcast_drill::workload::pay_drill::drill(&target, a.fault, a.assist, &opts)?;
            (serde_json::to_string_pretty(&r)?, r.table(), r.passed())
        } else {
            let unsafe_ = vipcast_drill::workload::Unsafe { async_fallback: a.unsafe_async_fallback };
            let r = vipcast_drill::workload::drill(&target, a.fault, variants, unsafe_, &opts)?;
            (serde_json::to_string_pretty(&r)?, r.table(), r.passed())
        };
        crate::progress::finish();
        if a.json {
            println!("{json}");
        } else {
            print!("{table}");
        }
        if !passed {
            anyhow::bail!("not every run passed: see the failed runs above");
        }
        return Ok(());
    }
    let report = vipcast_drill::drill(&target, a.fault, variants, &opts)?;
    crate::progress::finish();
    if let Some(path) = &a.svg {
        std::fs::write(path, vipcast_drill::demo::timeline_svg(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("timeline: {}", path.display());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::table(&[&report]));
        for n in &report.notes {
            println!("note: {n}");
        }
    }
    Ok(())
}

pub fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the vipcast binary")?;
    let cancel = watch_ctrl_c();
    let opts = vipcast_drill::demo::DemoOptions {
        exe,
        runs: a.runs.max(1),
        svg: a.svg.clone(),
        json: a.json.clone(),
        markdown: a.markdown.clone(),
        tls: a.tls == "on",
        progress: &progress,
        cancel: Some(&cancel),
    };
    if a.workloads {
        let r = vipcast_drill::workload::demo::demo(&opts)?;
        crate::progress::finish();
        println!();
        println!(
            "Failover of a semi-synchronous MariaDB pair behind a keepalived VIP (advert_int 0.1 s), {} runs each; \
             a client writing through the VIP with 4 connections; baseline: one plain bridge:",
            r.runs
        );
        print!("{}", vipcast_drill::workload::demo::table(&r));
        if let Some(p) = &a.markdown {
            println!("results written into {}", p.display());
        }
        println!("done in {:.0} s; everything is torn down", r.elapsed_s);
        let failed: usize = r.reports.iter().flat_map(|w| &w.runs).filter(|run| !run.passed()).count();
        if failed > 0 {
            anyhow::bail!("{failed} run(s) did not pass");
        }
        return Ok(());
    }
    let r = vipcast_drill::demo::demo(&opts)?;
    crate::progress::finish();
    let drills: Vec<&report::DrillReport> = r.drills.iter().collect();
    println!();
    println!(
        "Failover of a keepalived VIP (advert_int 0.1 s; {}), {} runs each, probes every 1 ms; overlay: assisted \
         handover off, overlay+assist: on, baseline: one plain bridge; control plane over {}:",
        r.bum,
        r.runs,
        vipcast_drill::demo::control_plane(r.tls)
    );
    print!("{}", report::table(&drills));
    for d in &r.drills {
        for n in &d.notes {
            println!("note: {}, {n}", d.fault);
        }
    }
    if let Some(p) = &r.payments {
        println!("The payment case (nginx and the payment backend writing through a semi-synchronous MariaDB pair):");
        print!("{}", p.table());
    }
    println!("timeline of the median link-down runs: {}", a.svg.display());
    if let Some(p) = &a.json {
        println!("report: {}", p.display());
    }
    if let Some(p) = &a.markdown {
        println!("results written into {}", p.display());
    }
    println!("done in {:.0} s; everything is torn down", r.elapsed_s);
    if r.payments.as_ref().is_some_and(|p| !p.passed()) {
        anyhow::bail!("the payment case did not pass: see its runs above");
    }
    Ok(())
}

pub fn probe(a: ProbeArgs) -> anyhow::Result<()> {
    let cfg = vipcast_drill::probe::ProberConfig {
        target: a.target,
        interval: Duration::from_micros(a.interval_us.max(1)),
        count: a.count,
    };
    vipcast_drill::probe::probe(&cfg, std::io::stdout())?;
    Ok(())
}

pub fn respond(a: ResponderArgs) -> anyhow::Result<()> {
    let name = match a.name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string(),
    };
    vipcast_drill::probe::respond(a.listen, &name)?;
    Ok(())
}

/// DB_USER and DB_PASSWORD from a member's `db.env`.
fn credentials(path: &std::path::Path) -> anyhow::Result<(String, String)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
            .with_context(|| format!("{}: no {key} line", path.display()))
    };
    Ok((field("DB_USER=")?, field("DB_PASSWORD=")?))
}

pub fn workload_client(a: WorkloadClientArgs) -> anyhow::Result<()> {
    let (user, password) = credentials(&a.credentials)?;
    let cfg = vipcast_drill::workload::client::ClientConfig {
        addr: a.addr,
        user,
        password,
        workers: a.workers.clamp(1, 64),
        connect_timeout: vipcast_drill::workload::CONNECT_TIMEOUT,
        io_timeout: vipcast_drill::workload::IO_TIMEOUT,
    };
    vipcast_drill::workload::client::run(&cfg, std::io::stdout())?;
    Ok(())
}

pub fn payment_backend(a: PaymentBackendArgs) -> anyhow::Result<()> {
    let (user, password) = credentials(&a.credentials)?;
    let cfg =
        vipcast_drill::workload::payment::BackendConfig { listen: a.listen, db: a.db, user, password, name: a.name };
    vipcast_drill::workload::payment::serve(cfg).with_context(|| format!("serving on {}", a.listen))
}

pub fn payment_client(a: PaymentClientArgs) -> anyhow::Result<()> {
    let cfg = vipcast_drill::workload::payment::ClientConfig {
        addr: a.addr,
        workers: a.workers.clamp(1, 64),
        connect_timeout: vipcast_drill::workload::CONNECT_TIMEOUT,
        io_timeout: vipcast_drill::workload::payment::IO_TIMEOUT,
    };
    vipcast_drill::workload::payment::run_client(&cfg, std::io::stdout())?;
    Ok(())
}

pub fn announce(a: AnnounceArgs) -> anyhow::Result<()> {
    Ok(vipcast_drill::announce(&a.dev, a.ip)?)
}

//! `vipcast vrrpd`: a VRRP v2/v3 daemon for guests, configured by a
//! keepalived.conf subset ([`conf`]) with keepalived's meanings, driven by
//! the sans-IO engine `vipcast-vrrp`.
//!
//! * [`conf`]: the keepalived.conf parser (warnings for unsupported
//!   keywords, errors with file and line);
//! * [`daemon`]: the event loop (raw protocol-112 sockets, one timer,
//!   signals, trackers, notify scripts, the status file);
//! * [`net`]: the sockets of one interface; [`kernel`]: rtnetlink;
//!   [`scripts`]: `vrrp_script` trackers and notify scripts;
//!   [`status`]: the JSON status file and its table;
//! * [`bench`]: `vipcast bench vrrp`, vrrpd against keepalived with the
//!   same instances.
//!
//! IPv4 and IPv6 (VRRPv3; the instance's family is its addresses', its
//! primary address the interface's link-local one unless `unicast_src_ip`).

#[cfg(feature = "daemon")]
pub mod bench;
pub mod conf;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod kernel;
#[cfg(feature = "daemon")]
pub mod net;
#[cfg(feature = "daemon")]
pub mod scripts;
#[cfg(feature = "daemon")]
pub mod status;

#[cfg(feature = "daemon")]
use std::path::PathBuf;

/// `vipcast vrrpd` flags.
#[cfg(feature = "daemon")]
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The keepalived.conf to run.
    #[arg(short = 'f', long = "use-file", required_unless_present = "show_status")]
    pub file: Option<PathBuf>,
    /// Validate the configuration, print warnings and errors, and exit (0: usable).
    #[arg(long, conflicts_with = "show_status")]
    pub check: bool,
    /// Where the JSON status is rewritten on every state change.
    #[arg(long, default_value = "/run/vipcast/vrrpd.status.json")]
    pub status: PathBuf,
    /// Print a status file as a table and exit.
    #[arg(long, value_name = "FILE")]
    pub show_status: Option<PathBuf>,
}

/// Runs `vipcast vrrpd`.
#[cfg(feature = "daemon")]
pub fn main(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.show_status {
        print!("{}", status::Status::read(path)?.table());
        return Ok(());
    }
    let Some(file) = args.file else { anyhow::bail!("-f FILE is required") };
    if args.check {
        let (c, warnings) = conf::Conf::load(&file)?;
        for w in &warnings {
            eprintln!("{w}");
        }
        println!(
            "{}: OK: {} vrrp_instance, {} vrrp_script, {} vrrp_sync_group, {} warnings",
            file.display(),
            c.instances.len(),
            c.scripts.len(),
            c.sync_groups.len(),
            warnings.len()
        );
        return Ok(());
    }
    small_pages();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(daemon::run(daemon::Options { config: file, status: args.status }))
}

/// Keeps the daemon's few MiB of heap in small pages: the allocator asks for
/// transparent huge pages, and with them 1000 instances were 20 MiB
/// resident instead of 11. THP is switched off for the process
/// (`vipcast_sys::disable_transparent_huge_pages`), which lasts across
/// `execve`; since what was allocated before (argument parsing, the logger)
/// already sits in huge pages, the process then re-executes itself once,
/// same pid and arguments, to start with small pages only.
#[cfg(feature = "daemon")]
fn small_pages() {
    use std::os::unix::process::CommandExt;
    let thp_on = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("THP_enabled:") && l.trim_end().ends_with('1')))
        .unwrap_or(false);
    if !thp_on {
        return;
    }
    if let Err(e) = vipcast_sys::disable_transparent_huge_pages() {
        tracing::debug!("transparent huge pages stay on: {e}");
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).exec();
    tracing::debug!("re-executing with small pages: {err}");
}

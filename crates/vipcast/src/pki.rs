//! `vipcast pki`: a CA and the certificates the control plane runs on.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use vipcast_api::PeerRole;
use vipcast_tls::pki;

#[derive(Debug, Args)]
pub struct Pki {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Create a CA in DIR: ca.crt, ca.key (0600) and the controller's
    /// heartbeat secret, heartbeat.secret (0600). Never replaces a CA.
    Init { dir: PathBuf },
    /// Issue DIR/NAME.crt and DIR/NAME.key (0600) signed by the CA in DIR.
    /// The role and name are carried in the certificate as the URI
    /// `vipcast://ROLE/NAME` (and as OU = role, CN = name); they are the
    /// only identity the controller believes. An agent (NAME = its chassis)
    /// also gets DIR/NAME.hbkey, its heartbeat key.
    Issue {
        dir: PathBuf,
        /// controller (a server certificate, needs --san), agent, replicator,
        /// admin or viewer.
        #[arg(long)]
        role: PeerRole,
        #[arg(long)]
        name: String,
        /// An IP address or DNS name the controller is reached at (repeat).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = pki::DEFAULT_DAYS)]
        days: i64,
    },
}

pub fn run(p: Pki) -> anyhow::Result<()> {
    match p.what {
        What::Init { dir } => {
            let d = pki::init(&dir)?;
            println!(
                "CA created: {} (key {}); heartbeat secret {}",
                d.ca_cert().display(),
                d.ca_key().display(),
                d.secret().display()
            );
        }
        What::Issue { dir, role, name, sans, days } => {
            let files = pki::issue(&dir, &pki::Request { role, name, sans, days })?;
            for f in files {
                println!("{}", f.display());
            }
        }
    }
    Ok(())
}

//! `vipcast`: one binary, a subcommand per role. This file only parses flags
//! and hands over to the crates that do the work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod dissect;

/// Highly available virtual IPs for VXLAN overlays.
#[derive(Debug, Parser)]
#[command(name = "vipcast", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dissect { file, legacy_unicast_checksum } => dissect::run(&file, legacy_unicast_checksum),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vipcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! Network-namespace labs for vipcast.
//!
//! Everything here is built from guards whose `Drop` removes what they
//! created — namespaces (and with them every link and address inside),
//! host-side links and processes — so a test that fails or panics still
//! leaves nothing behind. Names carry a short random id ([`unique_id`]) so
//! tests run in parallel.
//!
//! Namespaces and links are made with iproute2 (`ip`), the tool an operator
//! would use to inspect them too; the agent's data plane is programmed over
//! netlink elsewhere.
//!
//! On top of the guards, `vipcast lab` builds a whole overlay from a TOML
//! file ([`config`]): [`plan`] derives every name and address, [`topology`]
//! builds it (tearing down what it built if a step fails), [`teardown`]
//! removes a lab (also after a crash, from namespace names alone) and
//! [`state`] records what is up in `/run/vipcast/labs`; [`ovs`] runs the
//! private Open vSwitch of a chassis with `dataplane = "ovs"`.

pub mod config;
mod netns;
pub mod ovs;
pub mod plan;
mod process;
pub mod register;
pub mod state;
pub mod teardown;
pub mod topology;
pub mod workload;

pub use netns::{Netns, Veth, unique_id};
pub use process::Child;

/// Errors of lab operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command could not be started.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// A command exited with a failure.
    #[error("{cmd} failed ({status}): {stderr}")]
    Command { cmd: String, status: String, stderr: String },
    /// A name does not fit the kernel's limits.
    #[error("interface name {0:?} is longer than 15 bytes")]
    NameTooLong(String),
    /// A lab file that cannot be used.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// `lab up` of a lab that is up (or left over).
    #[error("{0}")]
    AlreadyUp(String),
    /// `lab status` / `lab exec` of a lab that is not up.
    #[error("{0}")]
    NotUp(String),
    /// Interrupted (Ctrl-C) while building.
    #[error("interrupted")]
    Cancelled,
    /// A step of building or tearing down failed.
    #[error("{0}")]
    Lab(String),
}

/// Result of lab operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Runs a command to completion; an error carries its stderr.
pub fn run(cmd: &mut std::process::Command) -> Result<String> {
    let desc = describe(cmd);
    let out = cmd.output().map_err(|source| Error::Spawn { cmd: desc.clone(), source })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: desc,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS...`
pub fn ip(args: &[&str]) -> Result<String> {
    run(std::process::Command::new("ip").args(args))
}

pub(crate) fn describe(cmd: &std::process::Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

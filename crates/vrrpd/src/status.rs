//! The status file: JSON, rewritten (write + rename) after every state change,
//! and `vipcast vrrpd --show-status FILE` to print it as a table.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The whole daemon.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub pid: u32,
    pub config: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// When this file was written, microseconds since the Unix epoch.
    pub updated_us: u64,
    /// Packets of protocol 112 refused before reaching an instance (TTL,
    /// checksum, length, version, type).
    #[serde(default)]
    pub invalid_packets: u64,
    pub instances: Vec<InstanceStatus>,
    /// The most recent state changes (the last [`HISTORY`]), oldest first.
    pub transitions: Vec<Transition>,
}

/// How many transitions the file keeps.
pub const HISTORY: usize = 256;

/// One instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    pub family: String,
    /// INIT, BACKUP, MASTER, FAULT.
    pub state: String,
    /// Why it is in that state (the last transition's reason).
    pub reason: String,
    /// Entered the state, microseconds since the Unix epoch.
    pub since_us: u64,
    pub priority: u8,
    pub effective_priority: u8,
    pub primary_ip: String,
    /// The master we listen to, while backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    pub addresses: Vec<String>,
    /// Counters as of the last write (the file is rewritten on state
    /// changes and at exit, not per advert).
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub adverts_discarded: u64,
    pub became_master: u64,
}

/// One state change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    pub instance: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    pub priority: u8,
    /// Microseconds since the Unix epoch.
    pub at_us: u64,
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Status {
    /// Writes the file atomically (a temporary file renamed over it).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        // Streamed: 1000 instances are ~0.5 MB of JSON, not worth holding.
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut out, self).map_err(std::io::Error::other)?;
        std::io::Write::flush(&mut out)?;
        drop(out);
        std::fs::rename(&tmp, path)
    }

    /// Reads a status file.
    pub fn read(path: &Path) -> anyhow::Result<Status> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// A table of the instances, then the last transitions.
    pub fn table(&self) -> String {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
        t.set_header([
            "instance",
            "interface",
            "vrid",
            "v",
            "state",
            "since",
            "prio",
            "eff",
            "master",
            "addresses",
            "sent",
            "recv",
        ]);
        for i in &self.instances {
            t.add_row([
                i.name.clone(),
                i.interface.clone(),
                i.vrid.to_string(),
                i.version.to_string(),
                i.state.clone(),
                ago(self.updated_us, i.since_us),
                i.priority.to_string(),
                i.effective_priority.to_string(),
                i.master.clone().unwrap_or_else(|| "-".into()),
                i.addresses.join(" "),
                i.adverts_sent.to_string(),
                i.adverts_received.to_string(),
            ]);
        }
        let mut out = format!(
            "vrrpd pid {} ({}){}\n{t}\n",
            self.pid,
            self.config,
            self.router_id.as_ref().map(|r| format!(", router_id {r}")).unwrap_or_default()
        );
        let last: Vec<_> = self.transitions.iter().rev().take(10).collect();
        if !last.is_empty() {
            out.push_str("last transitions:\n");
            for tr in last.into_iter().rev() {
                out.push_str(&format!(
                    "  {} ago  {}: {} -> {} ({}, priority {})\n",
                    ago(self.updated_us, tr.at_us),
                    tr.instance,
                    tr.from,
                    tr.to,
                    tr.reason,
                    tr.priority
                ));
            }
        }
        out
    }
}

/// `then` relative to `now` (both µs), e.g. `12.345s`.
fn ago(now: u64, then: u64) -> String {
    let d = now.saturating_sub(then);
    format!("{}.{:03}s", d / 1_000_000, (d / 1000) % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/status.json");
        let s = Status {
            pid: 7,
            config: "k.conf".into(),
            router_id: Some("a".into()),
            updated_us: 5_000_000,
            invalid_packets: 0,
            instances: vec![InstanceStatus {
                name: "VI_1".into(),
                interface: "eth0".into(),
                vrid: 51,
                version: 3,
                family: "ipv4".into(),
                state: "MASTER".into(),
                since_us: 1_500_000,
                priority: 150,
                effective_priority: 150,
                addresses: vec!["10.0.0.100/24".into()],
                ..Default::default()
            }],
            transitions: vec![Transition {
                instance: "VI_1".into(),
                from: "BACKUP".into(),
                to: "MASTER".into(),
                reason: "master down".into(),
                priority: 150,
                at_us: 1_500_000,
            }],
        };
        s.write(&path).unwrap();
        assert_eq!(Status::read(&path).unwrap(), s);
        let t = s.table();
        assert!(t.contains("VI_1") && t.contains("MASTER") && t.contains("3.500s"), "{t}");
    }
}

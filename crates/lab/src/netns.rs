use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Error, Result, ip};

/// A short random id (6 lowercase hex digits) for names that must not collide
/// between tests running in parallel, or with a previous run's leftovers.
pub fn unique_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut seed = [0u8; 8];
    // /dev/urandom always exists on the Linux machines labs run on; if it
    // cannot be read, time, pid and a counter still separate concurrent callers.
    if let Ok(bytes) = std::fs::read("/proc/sys/kernel/random/uuid") {
        for (i, b) in bytes.iter().enumerate() {
            if let Some(s) = seed.get_mut(i % 8) {
                *s ^= *b;
            }
        }
    }
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mix = u64::from_le_bytes(seed)
        ^ u64::from(nanos)
        ^ (u64::from(std::process::id()) << 20)
        ^ (u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)) << 40);
    let mut h = mix.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    format!("{:06x}", h & 0xff_ffff)
}

/// A network namespace, deleted (with every process in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up.
    pub fn new(name: impl Into<String>) -> Result<Netns> {
        let name = name.into();
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Keeps the namespace after this guard is gone (a lab that is up);
    /// returns its name.
    pub fn release(mut self) -> String {
        std::mem::take(&mut self.name)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program ARGS...` inside the namespace to completion.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        crate::run(self.command(program).args(args))
    }

    /// The MAC address of `dev` in this namespace.
    pub fn mac(&self, dev: &str) -> Result<String> {
        let path = format!("/sys/class/net/{dev}/address");
        self.run("cat", &[&path]).map(|s| s.trim().to_string())
    }

    /// Kills every process in the namespace (SIGKILL).
    pub fn kill_all(&self) {
        if let Ok(pids) = ip(&["netns", "pids", &self.name]) {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        self.kill_all();
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A veth pair, deleted on drop (deleting one end removes both; a namespace
/// that goes away takes its end with it).
#[derive(Debug)]
pub struct Veth {
    a: String,
    b: String,
    /// The namespace each end is in (`None`: the host), so that `Drop`
    /// deletes the end where it is and never a host interface of the same name.
    a_ns: Option<String>,
    b_ns: Option<String>,
}

impl Veth {
    /// Creates veth pair `a` <-> `b`, moves each end into its namespace (or
    /// leaves it on the host for `None`), and brings both up.
    pub fn new(a: &str, a_ns: Option<&Netns>, b: &str, b_ns: Option<&Netns>) -> Result<Veth> {
        for n in [a, b] {
            if n.len() > 15 {
                return Err(Error::NameTooLong(n.to_string()));
            }
        }
        ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
        let mut veth = Veth { a: a.to_string(), b: b.to_string(), a_ns: None, b_ns: None };
        for (first, dev, ns) in [(true, a, a_ns), (false, b, b_ns)] {
            match ns {
                Some(ns) => {
                    ip(&["link", "set", dev, "netns", ns.name()])?;
                    if first {
                        veth.a_ns = Some(ns.name().to_string());
                    } else {
                        veth.b_ns = Some(ns.name().to_string());
                    }
                    ns.ip(&["link", "set", dev, "up"])?;
                }
                None => {
                    ip(&["link", "set", dev, "up"])?;
                }
            }
        }
        Ok(veth)
    }

    /// The two ends' names.
    pub fn names(&self) -> (&str, &str) {
        (&self.a, &self.b)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Each end where it lives; errors mean it is already gone (with its namespace).
        for (dev, ns) in [(&self.a, &self.a_ns), (&self.b, &self.b_ns)] {
            let _ = match ns {
                Some(ns) => ip(&["-n", ns, "link", "del", dev]),
                None => ip(&["link", "del", dev]),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_and_distinct() {
        let a = unique_id();
        let b = unique_id();
        assert_eq!(a.len(), 6);
        assert_ne!(a, b);
    }
}

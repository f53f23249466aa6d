//! External commands: `vrrp_script` trackers (run every `interval`, killed
//! after `timeout`, up after `rise` successes in a row, down after `fall`
//! failures in a row) and notify scripts (started, never waited for by the
//! daemon's loop).
//!
//! Commands run through `/bin/sh -c`, as a line of a shell script.

use std::process::Stdio;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::conf::ScriptConf;

/// Starts `cmd` (with `args` appended, shell-quoted) and reaps it in the
/// background. Errors are logged.
pub fn notify(cmd: &str, args: &[&str]) {
    let mut line = cmd.to_string();
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    match tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&line)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            tokio::spawn(async move {
                match child.wait().await {
                    Ok(s) if !s.success() => tracing::warn!("notify script {line:?} exited with {s}"),
                    Err(e) => tracing::warn!("notify script {line:?}: {e}"),
                    Ok(_) => {}
                }
            });
        }
        Err(e) => tracing::warn!("cannot start notify script {line:?}: {e}"),
    }
}

/// Single-quotes `s` for `/bin/sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `cmd` once: whether it exited 0 within `timeout`.
pub async fn run_check(cmd: &str, timeout: Duration) -> bool {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else { return false };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status.success(),
        Ok(Err(_)) => false,
        Err(_) => {
            let _ = child.kill().await;
            false
        }
    }
}

/// keepalived's fall / rise counting for one script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub up: bool,
    streak: u32,
    fall: u32,
    rise: u32,
}

impl Counter {
    pub fn new(up: bool, fall: u32, rise: u32) -> Counter {
        Counter { up, streak: 0, fall: fall.max(1), rise: rise.max(1) }
    }

    /// Records one result; `Some(new state)` when the state flips.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { self.rise } else { self.fall };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// Runs `script` every interval and sends `(name, up)` when its state flips.
pub fn spawn_tracker(script: ScriptConf, up: bool, tx: mpsc::UnboundedSender<(String, bool)>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut counter = Counter::new(up, script.fall, script.rise);
        let mut tick = tokio::time::interval(script.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let ok = run_check(&script.script, script.timeout).await;
            if let Some(now_up) = counter.record(ok) {
                tracing::info!(script = %script.name, "vrrp_script is now {}", if now_up { "up" } else { "down" });
                if tx.send((script.name.clone(), now_up)).is_err() {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_and_rise() {
        let mut c = Counter::new(true, 3, 2);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None, "a success resets the failure streak");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(false));
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(true));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[tokio::test]
    async fn checks_exit_status_and_timeout() {
        assert!(run_check("true", Duration::from_secs(5)).await);
        assert!(!run_check("exit 3", Duration::from_secs(5)).await);
        let t = std::time::Instant::now();
        assert!(!run_check("sleep 5", Duration::from_millis(100)).await);
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}

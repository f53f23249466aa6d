use std::process::{Command, Stdio};

use crate::{Error, Result, describe};

/// A background process, killed and reaped on drop.
#[derive(Debug)]
pub struct Child {
    child: std::process::Child,
    desc: String,
    released: bool,
}

impl Child {
    /// Spawns `cmd` with stdout and stderr sent to `log` (a file path).
    pub fn spawn(cmd: &mut Command, log: &std::path::Path) -> Result<Child> {
        let desc = describe(cmd);
        let file = std::fs::File::create(log).map_err(|source| Error::Spawn { cmd: desc.clone(), source })?;
        let err = file.try_clone().map_err(|source| Error::Spawn { cmd: desc.clone(), source })?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|source| Error::Spawn { cmd: desc.clone(), source })?;
        Ok(Child { child, desc, released: false })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, if it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit; kills it
    /// after that. Returns whether it exited by itself.
    pub fn terminate(&mut self, grace: std::time::Duration) -> bool {
        if !self.is_running() {
            return true;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// What was started.
    pub fn description(&self) -> &str {
        &self.desc
    }

    /// Lets the process outlive this guard (a lab that is up keeps its
    /// daemons); returns its id.
    pub fn release(mut self) -> u32 {
        self.released = true;
        self.child.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Test helpers (cargo feature `testing`): a throwaway etcd, and a small
//! tmpfs to fill.
//!
//! ```no_run
//! # async fn demo() -> vipcast_store::Result<()> {
//! let etcd = vipcast_store::testing::Etcd::start();
//! let store = vipcast_store::EtcdStore::connect(&etcd.endpoints()).await?;
//! # Ok(()) }
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long etcd may take to answer `/health` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A single-member etcd listening on free 127.0.0.1 ports (never the default
/// 2379/2380), with its data in a temporary directory. Dropping it kills the
/// process and removes the directory, also when a test panics.
///
/// The binary is `$VIPCAST_ETCD` if set, else `etcd` from `PATH` (Debian
/// `etcd-server`). It runs with a 10 ms heartbeat and 100 ms election
/// timeout, so etcd's minimum lease ttl is 1 s.
#[derive(Debug)]
pub struct Etcd {
    // Declared before `dir`: the process is killed before its data goes.
    child: vipcast_lab::Child,
    client_url: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits (blocking, up to 30 s) until it is healthy.
    ///
    /// # Panics
    /// If etcd cannot be started; the message carries the end of its log.
    pub fn start() -> Etcd {
        match Etcd::try_start() {
            Ok(etcd) => etcd,
            Err(message) => panic!("{message}"),
        }
    }

    /// Like [`Etcd::start`], with the failure as a message. Retries with other
    /// ports if one was taken in the meantime.
    pub fn try_start() -> Result<Etcd, String> {
        Etcd::try_start_with(None)
    }

    /// Starts etcd serving its clients over TLS with `--client-cert-auth`
    /// (`https://` endpoints; only clients presenting a certificate signed by
    /// `tls.ca` are served), and waits until it is healthy (asked over a
    /// plain metrics URL).
    ///
    /// # Panics
    /// If etcd cannot be started; the message carries the end of its log.
    pub fn start_tls(tls: &TlsFiles) -> Etcd {
        match Etcd::try_start_with(Some(tls)) {
            Ok(etcd) => etcd,
            Err(message) => panic!("{message}"),
        }
    }

    fn try_start_with(tls: Option<&TlsFiles>) -> Result<Etcd, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match start_once(tls) {
                Ok(etcd) => return Ok(etcd),
                Err(Failure::PortTaken(message)) => last = message,
                Err(Failure::Fatal(message)) => return Err(message),
            }
        }
        Err(last)
    }

    /// The client URLs, for [`EtcdStore::connect`](crate::EtcdStore::connect).
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.client_url.clone()]
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temporary directory holding etcd's data and its log (`etcd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// etcd's server side of TLS: its certificate and key (the certificate
/// needs both server and client authentication as extended key usages:
/// etcd's JSON gateway calls etcd's own gRPC with it) and the CA its
/// clients' certificates must be signed by.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// A small tmpfs mounted on a new temporary directory (a disk a test can
/// fill), unmounted and removed on drop, also when a test panics. Needs root
/// (`mount -t tmpfs`).
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (rounded up to whole pages by the kernel).
    pub fn mount(bytes: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::Builder::new()
            .prefix("vipcast-tmpfs-")
            .tempdir()
            .map_err(|e| format!("cannot make a directory for a tmpfs: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "vipcast-test"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs on {} failed (tests filling a disk need root): {}",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the file `name` until the filesystem is full; the bytes
    /// written. Removing the file frees them.
    pub fn fill(&self, name: &str) -> std::io::Result<u64> {
        let mut file = std::fs::File::create(self.path().join(name))?;
        let chunk = vec![0u8; 64 << 10];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => return Err(e),
            }
        }
        // The last pages a short write left.
        let small = [0u8; 512];
        while let Ok(n) = file.write(&small) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        Ok(written)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(self.dir.path()).status().is_ok_and(|s| s.success())
        };
        // Lazily if something still has a file open on it.
        if !umount(false) && !umount(true) {
            eprintln!("vipcast-store testing: cannot unmount the tmpfs on {}", self.dir.path().display());
        }
    }
}

enum Failure {
    PortTaken(String),
    Fatal(String),
}

fn start_once(tls: Option<&TlsFiles>) -> Result<Etcd, Failure> {
    let dir = tempfile::Builder::new()
        .prefix("vipcast-etcd-")
        .tempdir()
        .map_err(|e| Failure::Fatal(format!("cannot make a directory for etcd: {e}")))?;
    let [client, peer, metrics] = free_ports().map_err(|e| Failure::Fatal(format!("cannot find free ports: {e}")))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let client_url = format!("{scheme}://{client}");
    let peer_url = format!("http://{peer}");
    let name = "vipcast-test";
    let binary = std::env::var_os("VIPCAST_ETCD").unwrap_or_else(|| "etcd".into());
    let mut cmd = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCD") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("{name}={peer_url}"), "--initial-cluster-state", "new"])
        .args(["--initial-cluster-token", &format!("vipcast-{}", vipcast_lab::unique_id())])
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .args(["--logger", "zap", "--log-outputs", "stderr"])
        .args(["--listen-metrics-urls", &format!("http://{metrics}")]);
    if let Some(tls) = tls {
        cmd.arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(&tls.ca)
            .arg("--cert-file")
            .arg(&tls.cert)
            .arg("--key-file")
            .arg(&tls.key);
    }
    let log = dir.path().join("etcd.log");
    let mut child = vipcast_lab::Child::spawn(&mut cmd, &log).map_err(|e| Failure::Fatal(e.to_string()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if healthy(metrics) {
            return Ok(Etcd { child, client_url, dir });
        }
        if !child.is_running() {
            let tail = log_tail(&log);
            let message = format!("etcd exited at start ({}):\n{tail}", child.description());
            return Err(if tail.contains("address already in use") {
                Failure::PortTaken(message)
            } else {
                Failure::Fatal(message)
            });
        }
        if Instant::now() > deadline {
            return Err(Failure::Fatal(format!(
                "etcd did not become healthy within {} s ({}):\n{}",
                START_TIMEOUT.as_secs(),
                child.description(),
                log_tail(&log)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Distinct free ports on 127.0.0.1 (bound at once, then released).
fn free_ports<const N: usize>() -> std::io::Result<[SocketAddr; N]> {
    let listeners = (0..N).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    let mut addrs = [SocketAddr::from(([127, 0, 0, 1], 0)); N];
    for (addr, l) in addrs.iter_mut().zip(&listeners) {
        *addr = l.local_addr()?;
    }
    Ok(addrs)
}

/// Whether etcd answers `GET /health` (on its plain metrics URL) with `"health":"true"`.
fn healthy(addr: SocketAddr) -> bool {
    let probe = || -> std::io::Result<bool> {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        conn.set_write_timeout(Some(Duration::from_secs(1)))?;
        conn.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        Ok(answer.contains("\"health\":\"true\""))
    };
    probe().unwrap_or(false)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

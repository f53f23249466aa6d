//! Workloads the lab runs on a VIP's members (`[[vip]] workload`).
//!
//! `mariadb`: the two members are a semi-synchronous MariaDB pair, each a
//! `mariadbd` in its VM's namespace with a private directory
//! (`<state dir>/mariadb-<vip>-<vm>/`: `my.cnf`, `db.env`, `dbctl`, the
//! data directory copied from a template made once per lab):
//!
//! ```text
//!   member 0 (starts as master)          member 1 (starts as replica)
//!   mariadbd  read_only=0  ── binlog ──► mariadbd  read_only=1
//!   semi-sync master, AFTER_SYNC  ◄─ACK─ semi-sync slave (GTID, current_pos)
//!   dbctl watch ─► health, role files ◄─ keepalived track_file (both)
//!   keepalived notify ─► dbctl notify: MASTER promotes, leaving MASTER fences
//! ```
//! Lossless settings: `sync_binlog=1`, `innodb_flush_log_at_trx_commit=1`,
//! GTID strict mode, `rpl_semi_sync_master_wait_point=AFTER_SYNC` and a
//! semi-sync timeout that never falls back to asynchronous replication.
//! `dbctl` (a shell script, [`DBCTL`]) holds the pair's rules; keepalived
//! gets `nopreempt`, priority 100 on both and the role file with weight 50,
//! so a master promoted without its peer (role 2, priority 200) outranks an
//! old master that comes back from a freeze (role 1, 150).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Error, Result, run};

/// The script each member's directory gets as `dbctl`.
pub const DBCTL: &str = include_str!("dbctl.sh");

/// The database the drills write to, and its table.
pub const DATABASE: &str = "vipcast";

/// The account clients use (password per lab, in `db.env`).
pub const DB_USER: &str = "vipcast";

/// The account replication uses (same password).
pub const REPL_USER: &str = "vipcast_repl";

/// What the template's first start creates.
/// The client account may only touch its database: with ALL PRIVILEGES it
/// would hold READ_ONLY ADMIN and write into a read-only replica.
const SETUP_SQL: &str = "CREATE USER 'vipcast'@'%' IDENTIFIED BY '@PASSWORD@';
GRANT SELECT, INSERT, UPDATE, DELETE ON vipcast.* TO 'vipcast'@'%';
CREATE USER 'vipcast_repl'@'%' IDENTIFIED BY '@PASSWORD@';
GRANT REPLICATION SLAVE, REPLICATION SLAVE ADMIN, BINLOG MONITOR ON *.* TO 'vipcast_repl'@'%';
CREATE DATABASE vipcast;
CREATE TABLE vipcast.ops (
    id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    worker INT UNSIGNED NOT NULL,
    sent_us BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB;
CREATE TABLE vipcast.payments (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    idem_key VARCHAR(64) NOT NULL UNIQUE,
    amount BIGINT UNSIGNED NOT NULL,
    backend VARCHAR(64) NOT NULL
) ENGINE=InnoDB;
";

/// How long mariadbd may take to answer.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// The directory of one member: `<dir>/mariadb-<vip>-<vm>`.
pub fn member_dir(dir: &Path, vip: &str, vm: &str) -> PathBuf {
    dir.join(format!("mariadb-{vip}-{vm}"))
}

/// Makes a template data directory at `dir` (mariadb-install-db, then one
/// start without networking to create the account, database and table).
pub fn template(dir: &Path, password: &str) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::Lab(format!("{}: {e}", dir.display())))?;
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    run(Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.display()))
        .args(["--user=root", "--auth-root-authentication-method=socket", "--skip-test-db"])
        .arg("--innodb-log-file-size=8M"))?;
    let socket = parent.join("template.sock");
    let log = parent.join("template.err");
    let mut server = crate::Child::spawn(
        Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.display()))
            .args(["--user=root", "--innodb-log-file-size=8M", "--skip-networking"])
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", parent.join("template.pid").display()))
            .arg(format!("--log-error={}", log.display())),
        &parent.join("template.out"),
    )?;
    let client = |extra: &[&str]| {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults").arg(format!("--socket={}", socket.display())).args(extra);
        c
    };
    let end = Instant::now() + READY_LIMIT;
    while run(&mut client(&["-e", "SELECT 1"])).is_err() {
        if Instant::now() > end || !server.is_running() {
            return Err(Error::Lab(format!("the template mariadbd did not start; see {}", log.display())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let sql = SETUP_SQL.replace("@PASSWORD@", password);
    run(&mut client(&["-e", &sql]))?;
    run(&mut client(&["-e", "SHUTDOWN"]))?;
    let end = Instant::now() + READY_LIMIT;
    while server.is_running() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.terminate(Duration::from_secs(5));
    Ok(())
}

/// One member of a pair.
#[derive(Debug, Clone)]
pub struct Member<'a> {
    pub dir: &'a Path,
    pub server_id: u32,
    pub peer: IpAddr,
    pub password: &'a str,
}

/// Writes a member's directory: its data directory (a copy of `template`),
/// `my.cnf`, `db.env`, `dbctl`, and the health and role files keepalived
/// tracks (healthy, replica).
pub fn prepare(m: &Member<'_>, template: &Path) -> Result<()> {
    let dir = m.dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::Lab(format!("{}: {e}", dir.display())))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::Lab(format!("{}: {e}", dir.display())))?;
    run(Command::new("cp").arg("-a").arg(template).arg(dir.join("data")))?;
    let write = |name: &str, text: &str, mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::Lab(format!("{}: {e}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::Lab(format!("{}: {e}", path.display())))
    };
    write("my.cnf", &my_cnf(dir, m.server_id), 0o600)?;
    write(
        "db.env",
        &format!("PEER={}\nDB_USER={DB_USER}\nDB_PASSWORD={}\nREPL_USER={REPL_USER}\n", m.peer, m.password),
        0o600,
    )?;
    write("dbctl", DBCTL, 0o700)?;
    write("health", "0\n", 0o644)?;
    write("role", "0\n", 0o644)
}

fn my_cnf(dir: &Path, server_id: u32) -> String {
    let d = dir.display();
    format!(
        "[client]
socket={d}/mysqld.sock
user=root

[mariadbd]
user=root
datadir={d}/data
socket={d}/mysqld.sock
pid-file={d}/mariadbd.pid
log-error={d}/error.log
port=3306
bind-address=0.0.0.0
skip-name-resolve
server-id={server_id}
log-bin=binlog
log-basename=member
binlog-format=ROW
sync-binlog=1
innodb-flush-log-at-trx-commit=1
innodb-buffer-pool-size=32M
innodb-log-file-size=8M
gtid-strict-mode=1
log-slave-updates=1
read-only=1
rpl-semi-sync-master-wait-point=AFTER_SYNC
rpl-semi-sync-master-timeout=4294967295
rpl-semi-sync-master-wait-no-slave=1
slave-net-timeout=1
slave-parallel-threads=4
slave-parallel-mode=optimistic
performance-schema=0
max-connections=500
"
    )
}

/// The lines keepalived.conf gets for a member in `dir`: top-level
/// `vrrp_track_file` blocks, and the instance's `track_file`, `notify` and
/// `nopreempt`.
pub fn keepalived_lines(dir: &Path) -> (String, String) {
    let d = dir.display();
    let top = format!(
        "vrrp_track_file db_health {{\n    file {d}/health\n    weight 0\n}}\n\
         vrrp_track_file db_role {{\n    file {d}/role\n    weight 50\n}}\n"
    );
    let instance = format!(
        "    nopreempt\n    track_file {{\n        db_health weight 0\n        db_role weight 50\n    }}\n    notify \
         \"{d}/dbctl notify\"\n"
    );
    (top, instance)
}

/// `dbctl start master|replica` in namespace `ns`.
pub fn start(ns: &str, dir: &Path, master: bool) -> Result<()> {
    let dbctl = dir.join("dbctl");
    run(Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&dbctl)
        .args(["start", if master { "master" } else { "replica" }]))
    .map(|_| ())
    .map_err(|e| Error::Lab(format!("{e}\nsee {}", dir.join("error.log").display())))
}

/// The `db.env` password of a member directory.
pub fn password(dir: &Path) -> Result<String> {
    let path = dir.join("db.env");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Lab(format!("{}: {e}", path.display())))?;
    text.lines()
        .find_map(|l| l.strip_prefix("DB_PASSWORD="))
        .map(str::to_string)
        .ok_or_else(|| Error::Lab(format!("{}: no DB_PASSWORD", path.display())))
}

/// The script each payment-service member's directory gets as `webctl`.
pub const WEBCTL: &str = include_str!("webctl.sh");

/// The port the payment backend listens on (loopback, behind nginx).
pub const BACKEND_PORT: u16 = 8080;

/// The directory of one payment-service member: `<dir>/http-<vip>-<vm>`.
pub fn web_dir(dir: &Path, vip: &str, vm: &str) -> PathBuf {
    dir.join(format!("http-{vip}-{vm}"))
}

/// Writes a payment-service member's directory: `nginx.conf` (port 80 to
/// the backend on loopback), `webctl`, the health file keepalived tracks.
pub fn prepare_web(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::Lab(format!("{}: {e}", dir.display())))?;
    }
    std::fs::create_dir_all(dir.join("tmp")).map_err(|e| Error::Lab(format!("{}: {e}", dir.display())))?;
    let write = |name: &str, text: &str, mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::Lab(format!("{}: {e}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::Lab(format!("{}: {e}", path.display())))
    };
    write("nginx.conf", &nginx_conf(dir), 0o644)?;
    write("webctl", WEBCTL, 0o700)?;
    write("health", "0\n", 0o644)
}

fn nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# The payment service's front end (vipcast lab).
daemon off;
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    client_max_body_size 4k;
    server {{
        listen 80;
        location / {{
            proxy_pass http://127.0.0.1:{BACKEND_PORT};
            proxy_connect_timeout 1s;
            proxy_read_timeout 5s;
        }}
    }}
}}
"
    )
}

/// The lines keepalived.conf gets for a payment-service member in `dir`:
/// the health file (weight 0: non-zero is FAULT).
pub fn web_keepalived_lines(dir: &Path) -> (String, String) {
    let d = dir.display();
    let top = format!("vrrp_track_file web_health {{\n    file {d}/health\n    weight 0\n}}\n");
    let instance = "    track_file {\n        web_health weight 0\n    }\n".to_string();
    (top, instance)
}

//! An acknowledged write survives `kill -9` of the controller (embedded store:
//! committed and fsynced before the reply), and a restarted controller serves
//! it again.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use vipcast_lab::Child;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(dir: &std::path::Path, port: u16) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vipcast"));
    cmd.args(["controller", "--listen", &format!("127.0.0.1:{port}"), "--store"])
        .arg(format!("file:{}", dir.display()));
    static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let child = Child::spawn(&mut cmd, &dir.join(format!("controller-{n}.log"))).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("controller did not start");
}

fn ctl(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vipcast"))
        .args(["ctl", "--json", "--controller", &format!("http://127.0.0.1:{port}")])
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// `vipcast ctl` with the words of `line`.
fn ctl_line(port: u16, line: &str) -> (bool, String) {
    ctl(port, &line.split_whitespace().collect::<Vec<_>>())
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut c = start(dir.path(), port);
    // Each write is acknowledged, then the controller is killed at once.
    let writes = [
        "vpc create prod --vni 100",
        "subnet create --vpc prod web --cidr 192.168.10.0/24",
        "chassis register hv1 --underlay-ip 172.31.0.1",
        "port create pay1 --vpc prod --subnet web --chassis hv1 --mac 02:00:00:00:00:01 --ip 192.168.10.11",
        "vip create pay-vip --vpc prod --subnet web --ip 192.168.10.100 --members pay1",
        "vip claim pay-vip --mac 02:00:00:00:00:01 --chassis hv1",
    ];
    for w in writes {
        let (ok, out) = ctl_line(port, w);
        assert!(ok, "{w:?}: {out}");
        let _ = Command::new("kill").args(["-9", &c.id().to_string()]).status();
        drop(c);
        c = start(dir.path(), port);
    }
    let (ok, out) = ctl(port, &["vip", "show", "pay-vip"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["owner"]["port"], "pay1");
    assert_eq!(v["owner"]["generation"], 1);
    let (ok, out) = ctl(port, &["vip", "history", "pay-vip"]);
    assert!(ok && out.contains("\"generation\": 1"), "{out}");
    // A second controller on the same file is refused, not corrupting it.
    let other = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_vipcast"))
        .args(["controller", "--listen", &format!("127.0.0.1:{other}"), "--store"])
        .arg(format!("file:{}", dir.path().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("store"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Reads the first non-ping NDJSON message of a watch stream.
fn first_message(port: u16, path: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let t = line.trim();
        // Skip the status line, headers and chunk-size lines of the chunked body.
        if t.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            if v["type"] != "ping" {
                return v;
            }
        }
    }
}

#[test]
fn subscribers_resume_after_a_controller_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let c = start(dir.path(), port);
    for w in [
        "vpc create prod --vni 100",
        "subnet create --vpc prod web --cidr 192.168.10.0/24",
        "chassis register hv1 --underlay-ip 172.31.0.1",
        "chassis register hv2 --underlay-ip 172.31.0.2",
        "port create pay1 --vpc prod --subnet web --chassis hv1 --mac 02:00:00:00:00:01 --ip 192.168.10.11",
        "port create pay2 --vpc prod --subnet web --chassis hv2 --mac 02:00:00:00:00:02 --ip 192.168.10.12",
        "vip create pay-vip --vpc prod --subnet web --ip 192.168.10.100 --members pay1,pay2",
    ] {
        let (ok, out) = ctl_line(port, w);
        assert!(ok, "{w:?}: {out}");
    }
    let snap = first_message(port, "/v1/watch/chassis/hv1");
    assert_eq!(snap["type"], "snapshot");
    let seen = snap["revision"].as_i64().unwrap();

    let _ = Command::new("kill").args(["-9", &c.id().to_string()]).status();
    drop(c);
    let _c = start(dir.path(), port);
    let (ok, out) = ctl(port, &["vip", "claim", "pay-vip", "--mac", "02:00:00:00:00:02", "--chassis", "hv2"]);
    assert!(ok, "{out}");
    // The subscriber comes back with the revision it holds and gets one small delta.
    let m = first_message(port, &format!("/v1/watch/chassis/hv1?from={seen}"));
    assert_eq!(m["type"], "delta", "{m}");
    let upserts = m["upserts"].as_array().unwrap();
    assert_eq!(upserts.len(), 1, "{m}");
    assert_eq!((upserts[0]["kind"].as_str(), upserts[0]["owner"]["port"].as_str()), (Some("vip"), Some("pay2")));
    assert!(m["revision"].as_i64().unwrap() > seen);
}

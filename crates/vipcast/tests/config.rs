//! `--config FILE` for the daemons: settings from a TOML file, flags
//! winning over it, every error naming FILE:LINE, `--check-config`; and a
//! controller really started from a file.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn vipcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vipcast")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn file(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
    let p = dir.path().join(name);
    std::fs::File::create(&p).unwrap().write_all(body.as_bytes()).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn settings_come_from_the_file_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(
        &dir,
        "agent.toml",
        "# an agent\nchassis = \"hv1\"\nunderlay_ip = \"172.31.0.1\"\ncontroller = \"http://10.0.0.10:7600\"\nheartbeat_ms = 40\nsniff = false\n",
    );
    let o = vipcast(&["agent", "--config", &f, "--check-config", "--heartbeat-ms", "60"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for line in [
        format!("chassis = \"hv1\"  # {f}:2"),
        format!("underlay_ip = \"172.31.0.1\"  # {f}:3"),
        format!("sniff = false  # {f}:6"),
        "heartbeat_ms = 60  # flag".to_string(),
        "peer_port = 4797  # default".to_string(),
        "# configuration ok".to_string(),
    ] {
        assert!(out.contains(&line), "missing {line:?} in\n{out}");
    }
}

#[test]
fn every_mistake_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (body, want) in [
        ("chassis = \"hv1\"\n\nbogus = 1\n", ":3: unknown key \"bogus\" for vipcast agent"),
        (
            "chassis = \"hv1\"\nunderlay_ip = \"nope\"\ncontroller = \"x\"\n",
            ":2: the value of \"underlay_ip\" is refused",
        ),
        (
            "chassis = \"hv1\"\n[controller]\nurl = \"x\"\n",
            ":2: \"controller\" takes a string, number or boolean, not table",
        ),
        ("chassis = \"hv1\"\n[tls]\nca = \"x\"\n", ":2: unknown key \"tls\""),
        ("chassis = \"hv1\"\nheartbeat_ms = \n", ":2: "),
        (
            "chassis = \"hv1\"\nheartbeat_ms = 1\nunderlay_ip = \"1.2.3.4\"\ncontroller = \"x\"\n",
            ":2: the value of \"heartbeat_ms\" is refused",
        ),
    ] {
        let f = file(&dir, "bad.toml", body);
        let o = vipcast(&["agent", "--config", &f, "--check-config"]);
        assert!(!o.status.success(), "accepted:\n{body}");
        let out = text(&o);
        assert!(out.contains(&format!("{f}{want}")), "{body:?}: wanted {want:?} in\n{out}");
    }
    let o = vipcast(&["agent", "--config", "/nonexistent/agent.toml", "--check-config"]);
    assert!(!o.status.success() && text(&o).contains("/nonexistent/agent.toml"), "{}", text(&o));
}

/// A controller started from its file alone answers its API where the file says.
#[test]
fn a_controller_runs_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = dir.path().join("store");
    let f = file(
        &dir,
        "controller.toml",
        &format!("listen = \"127.0.0.1:{port}\"\nstore = \"file:{}\"\nliveness_timeout_ms = 300\n", store.display()),
    );
    let check = vipcast(&["controller", "--config", &f, "--check-config"]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains(&format!("liveness_timeout_ms = 300  # {f}:3")), "{}", text(&check));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vipcast"))
        .args(["controller", "--config", &f])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Read;
            s.write_all(b"GET /v1/vpcs HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            break buf;
        }
        assert!(Instant::now() < end, "the controller never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(store.exists(), "the store is where the file says");
}

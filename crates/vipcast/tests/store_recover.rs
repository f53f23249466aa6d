//! `vipcast controller` on a store file it cannot trust (here an empty one,
//! as a truncation leaves it): it stops with an error that says so and what
//! to do, leaving the file as it is; with `--store-recover` it starts, and its
//! log says what it dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vipcast_lab::Child;

fn controller(dir: &Path, port: u16, extra: &[&str], log: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vipcast"));
    cmd.args(["controller", "--listen", &format!("127.0.0.1:{port}"), "--store"])
        .arg(format!("file:{}", dir.display()))
        .args(extra)
        .env("VIPCAST_LOG", "info");
    Child::spawn(&mut cmd, log).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn an_empty_store_file_stops_the_controller_and_store_recover_says_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("store.redb"), b"").unwrap();

    let log = dir.path().join("refused.log");
    let mut c = controller(&store, free_port(), &[], &log);
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = c.exit_status() {
            break status;
        }
        assert!(Instant::now() < end, "the controller serves an empty store file");
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(text.contains("cannot be trusted: the file is empty (0 bytes)"), "{text}");
    assert!(text.contains("--store-recover"), "{text}");
    assert_eq!(std::fs::metadata(store.join("store.redb")).unwrap().len(), 0, "left as it was");

    let port = free_port();
    let log = dir.path().join("recovered.log");
    let _c = controller(&store, port, &["--store-recover"], &log);
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < end,
            "the recovering controller did not start: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("--store-recover: the store file was recovered"), "{text}");
    assert!(text.contains("moved to") && text.contains("an empty store started"), "{text}");
    assert!(text.contains("--store-recover: the stored objects needed no recovery"), "{text}");
}

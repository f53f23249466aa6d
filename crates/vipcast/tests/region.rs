//! The control-plane benchmark at a size that fits CI, as a test of what it
//! exercises: every chassis' watch stream gets its snapshot from a cold
//! controller, every VIP move reaches every chassis of its VPC (and only
//! those: the bytes per move stay those of one VPC), and after `kill -9`
//! every stream resumes — from a restarted controller on the file store,
//! or from another of three controllers sharing etcd.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vipcast"))
        .args(["bench", "control-plane", "--json"])
        .args(args)
        .output()
        .expect("vipcast runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench {args:?} failed:\n{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let run = v["runs"][0].clone();
    eprintln!("{run:#}");
    run
}

fn check(run: &Value, chassis: u64) {
    assert_eq!(run["subscribers"].as_u64(), Some(chassis + 4));
    assert_eq!(run["reconnects_during_moves"].as_u64(), Some(0), "no stream was cut during the moves");
    // Each move reaches its VPC's chassis and the replicators, a few dozen,
    // not the whole region.
    let per_move = run["subscribers_per_move"].as_f64().unwrap();
    assert!(per_move > 4.0 && per_move < chassis as f64 / 2.0, "{per_move} subscribers per move");
    let bytes = run["bytes_per_move"].as_f64().unwrap();
    assert!(bytes < 2_000.0 * per_move, "{bytes} bytes per move for {per_move} subscribers");
    // Generous bounds: a slow CI machine, a debug build.
    assert!(run["p99_ms"].as_f64().unwrap() < 2_000.0, "p99 {}", run["p99_ms"]);
    assert!(run["restart_resync_s"].as_f64().unwrap() < 60.0);
}

#[test]
fn every_stream_resumes_after_the_controller_is_killed() {
    let run = bench(&["--chassis", "300", "--moves", "60"]);
    check(&run, 300);
    assert!(run["restart_up_s"].as_f64().is_some(), "the controller was started again");
}

#[test]
fn streams_move_to_another_controller_sharing_etcd() {
    let run = bench(&["--chassis", "150", "--moves", "30", "--store", "etcd", "--controllers", "3"]);
    check(&run, 150);
    assert_eq!(run["controllers"].as_u64(), Some(3));
    assert!(run["restart_up_s"].is_null(), "the killed controller stays dead; its streams moved");
}

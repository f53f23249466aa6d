//! `vipcast lab` end to end with the real binary (root): a lab without
//! chassis (so without agents) comes up with its controller answering on
//! the host link, is registered, shows in `status`, runs commands with
//! `exec`, refuses a second `up`, and `down` (also after a crash, and twice)
//! leaves nothing behind. A lab file with errors creates nothing.

use std::process::{Command, Output};

use vipcast_lab::state::{Root, http_get, pid_alive};
use vipcast_lab::teardown::{host_links, lab_namespaces};
use vipcast_lab::unique_id;

fn vipcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vipcast")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// A lab file in a temporary directory; `lab down` on drop.
struct CliLab {
    name: String,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl CliLab {
    fn new(store: &str, extra: &str) -> CliLab {
        let name = format!("lc{}", unique_id());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!(
                "name = \"{name}\"\n[controller]\nstore = \"{store}\"\n[[vpc]]\nname = \"prod\"\nvni = 100\n\
                 [[subnet]]\nvpc = \"prod\"\nname = \"web\"\ncidr = \"192.168.10.0/24\"\n{extra}"
            ),
        )
        .unwrap();
        CliLab { name, file, _dir: dir }
    }

    fn up(&self) -> Output {
        vipcast(&["lab", "up", self.file.to_str().unwrap()])
    }

    fn assert_gone(&self) {
        assert_eq!(lab_namespaces(&self.name).unwrap(), Vec::<String>::new());
        assert_eq!(host_links(&self.name).unwrap(), Vec::<String>::new());
        assert!(!Root::default().state_file(&self.name).exists());
        assert!(!Root::default().state_dir(&self.name).exists());
    }
}

impl Drop for CliLab {
    fn drop(&mut self) {
        let _ = vipcast(&["lab", "down", &self.name]);
    }
}

/// The controller URL `lab up` printed.
fn controller_url(out: &str) -> String {
    let line = out.lines().find(|l| l.starts_with("controller: ")).unwrap_or_else(|| panic!("no URL in:\n{out}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

fn up_status_exec_down(store: &str) {
    let lab = CliLab::new(store, "");
    let out = lab.up();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    // Progress lines, then the summary with the URL on the host link.
    assert!(
        all.contains(&format!("lab {}: namespace {}-net: underlay bridge ul0 10.255.0.254/24", lab.name, lab.name)),
        "{all}"
    );
    assert!(all.contains("registered 1 VPCs, 1 subnets"), "{all}");
    let url = controller_url(&String::from_utf8_lossy(&out.stdout));
    assert!(url.starts_with("https://10.254.") && url.ends_with(".2:7600"), "{url}");
    assert!(all.contains("(mutual TLS)"), "{all}");
    if store == "etcd" {
        // The controller reached etcd with its certificate.
        assert!(all.contains("2379 (TLS, client certificates required)"), "{all}");
    }

    // The controller answers only clients with a certificate of the lab's CA.
    let files = Root::default().read(&lab.name).unwrap().unwrap().client_files().expect("a TLS lab");
    if store == "etcd" {
        // etcd has a CA of its own: the controller's etcd certificate is
        // served (etcd answers 404 for a path it does not have), the lab's
        // own identities (like every agent's) are refused in the handshake.
        let etcd_pki = files.ca.parent().unwrap().join("etcd");
        let etcd_ca = etcd_pki.join("ca.crt");
        let at_etcd = |cert: &std::path::Path, key: &std::path::Path| {
            let args = [
                "lab",
                "exec",
                &lab.name,
                "net",
                "--",
                env!("CARGO_BIN_EXE_vipcast"),
                "ctl",
                "--controller",
                "https://10.255.0.254:2379",
                "--ca",
                etcd_ca.to_str().unwrap(),
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "vpc",
                "list",
            ];
            text(&vipcast(&args))
        };
        let served = at_etcd(&etcd_pki.join("controller.crt"), &etcd_pki.join("controller.key"));
        assert!(served.contains("404"), "the controller's etcd certificate: {served}");
        let refused = at_etcd(&files.cert, &files.key);
        assert!(
            !refused.contains("404") && refused.contains("cannot reach"),
            "a certificate of the lab's CA reached etcd: {refused}"
        );
    }
    let health = http_get(&format!("{url}/healthz"), Some(&files), std::time::Duration::from_secs(2)).unwrap();
    assert!(health.contains("\"ok\""), "{health}");
    assert!(http_get(&format!("{url}/healthz"), None, std::time::Duration::from_secs(2)).is_err());
    let tls_args = [
        "--ca",
        files.ca.to_str().unwrap(),
        "--cert",
        files.cert.to_str().unwrap(),
        "--key",
        files.key.to_str().unwrap(),
    ];
    let vpcs = vipcast(&[&["ctl", "--json", "--controller", &url][..], &tls_args, &["vpc", "list"]].concat());
    assert!(text(&vpcs).contains("\"prod\""), "{}", text(&vpcs));
    let anonymous = vipcast(&["ctl", "--json", "--controller", &url, "vpc", "list"]);
    assert!(!anonymous.status.success(), "{}", text(&anonymous));
    // `lab env` prints exactly those settings for a shell.
    let env = vipcast(&["lab", "env", &lab.name]);
    let env = text(&env);
    for want in [format!("export VIPCAST_CONTROLLER={url}"), format!("export VIPCAST_CA={}", files.ca.display())] {
        assert!(env.contains(&want), "{want} not in:\n{env}");
    }

    let status = vipcast(&["lab", "status", &lab.name]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains(&url), "{}", text(&status));
    let json = vipcast(&["lab", "status", &lab.name, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["controller_url"], url);
    assert_eq!(v["controller_healthy"], true);
    let roles: Vec<&str> = v["processes"].as_array().unwrap().iter().map(|p| p["role"].as_str().unwrap()).collect();
    assert_eq!(roles, if store == "etcd" { vec!["etcd", "controller"] } else { vec!["controller"] });
    assert!(v["processes"].as_array().unwrap().iter().all(|p| p["running"] == true), "{v}");
    let pids: Vec<u32> = v["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap() as u32).collect();

    // exec: in the underlay namespace, with the command's exit status.
    let exec = vipcast(&["lab", "exec", &lab.name, "net", "--", "ip", "-br", "addr", "show", "dev", "ul0"]);
    assert!(exec.status.success() && text(&exec).contains("10.255.0.254/24"), "{}", text(&exec));
    let fail = vipcast(&["lab", "exec", &lab.name, "net", "--", "sh", "-c", "exit 3"]);
    assert_eq!(fail.status.code(), Some(3));
    let none = vipcast(&["lab", "exec", &lab.name, "nosuch", "--", "true"]);
    assert!(!none.status.success() && text(&none).contains("has no node \"nosuch\""), "{}", text(&none));

    // A second up is refused.
    let again = lab.up();
    assert!(!again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("already up") && text(&again).contains(&format!("vipcast lab down {}", lab.name)));

    let down = vipcast(&["lab", "down", &lab.name]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(text(&down).contains("is down"), "{}", text(&down));
    lab.assert_gone();
    assert!(pids.iter().all(|p| !pid_alive(*p)), "daemons left: {pids:?}");
    let twice = vipcast(&["lab", "down", &lab.name]);
    assert!(twice.status.success() && text(&twice).contains("nothing to do"), "{}", text(&twice));
    let status = vipcast(&["lab", "status", &lab.name]);
    assert!(!status.status.success() && text(&status).contains("is not up"), "{}", text(&status));
}

#[test]
fn file_store_lab_up_status_exec_down() {
    up_status_exec_down("file");
}

#[test]
fn etcd_store_lab_up_status_exec_down() {
    up_status_exec_down("etcd");
}

#[test]
fn down_after_a_crash() {
    let lab = CliLab::new("file", "");
    let out = lab.up();
    assert!(out.status.success(), "{}", text(&out));
    let state = Root::default().read(&lab.name).unwrap().unwrap();
    // The state file is lost (as if `lab up` had been killed before writing it).
    std::fs::remove_file(Root::default().state_file(&lab.name)).unwrap();
    let status = vipcast(&["lab", "status", &lab.name]);
    assert!(text(&status).contains("left over"), "{}", text(&status));
    let down = vipcast(&["lab", "down", &lab.name]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(text(&down).contains("no state file"), "{}", text(&down));
    lab.assert_gone();
    assert!(state.processes.iter().all(|p| !pid_alive(p.pid)));
}

#[test]
fn a_file_with_errors_creates_nothing() {
    let lab = CliLab::new(
        "file",
        "[[vm]]\nname = \"a\"\nchassis = \"hv1\"\nvpc = \"prod\"\nsubnet = \"web\"\nip = \"10.0.0.1\"\n",
    );
    let out = lab.up();
    assert!(!out.status.success());
    let all = text(&out);
    assert!(all.contains("vm[0] \"a\", key \"chassis\": no [[chassis]] named \"hv1\""), "{all}");
    assert!(all.contains("vm[0] \"a\", key \"ip\": 10.0.0.1 is not a host address"), "{all}");
    lab.assert_gone();
}

//! The Debian package (`scripts/package-deb.sh`): its systemd units pass
//! `systemd-analyze verify`, its default configuration files are accepted
//! by `--check-config` (the agent's and replicator's with their example
//! settings filled in), and the package holds what DEPLOY.md says. Installing
//! it on a clean Debian 12 root and starting the controller as its unit does
//! is `scripts/deploy-check.sh`, run by `scripts/fresh-root.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vipcast() -> &'static str {
    env!("CARGO_BIN_EXE_vipcast")
}

const ROLES: [&str; 3] = ["controller", "agent", "replicator"];

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for role in ROLES {
        let name = format!("vipcast-{role}.service");
        let text = std::fs::read_to_string(repo().join("packaging/systemd").join(&name)).unwrap();
        assert!(text.contains("ExecStart=/usr/bin/vipcast "), "{name}");
        assert!(text.contains("Restart=on-failure") && text.contains("ProtectSystem=strict"), "{name}");
        // Verified against the binary of this build (verify checks it exists).
        let path = dir.path().join(&name);
        std::fs::write(&path, text.replace("/usr/bin/vipcast", vipcast())).unwrap();
        units.push(path);
    }
    let o = Command::new("systemd-analyze").arg("verify").args(&units).output().expect("systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
    // Only what each role needs: the controller no capability, the
    // replicator a raw socket, the agent the data plane's two; and only the
    // agent runs as root.
    let unit =
        |role: &str| std::fs::read_to_string(repo().join(format!("packaging/systemd/vipcast-{role}.service"))).unwrap();
    assert!(unit("controller").contains("CapabilityBoundingSet=\n") && unit("controller").contains("User=vipcast"));
    assert!(
        unit("replicator").contains("CapabilityBoundingSet=CAP_NET_RAW\n")
            && unit("replicator").contains("User=vipcast")
    );
    assert!(
        unit("agent").contains("CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW\n") && !unit("agent").contains("User=")
    );
}

#[test]
fn the_shipped_configuration_files_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    for role in ROLES {
        let text = std::fs::read_to_string(repo().join(format!("packaging/etc/{role}.toml"))).unwrap();
        // The agent's and replicator's ship commented out: their examples,
        // filled in as DEPLOY.md says, must be right.
        let filled: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if role != "controller" && rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => {
                    rest.to_string()
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, filled).unwrap();
        let o = Command::new(vipcast())
            .args([role, "--config", path.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{role}: {said}{}", String::from_utf8_lossy(&o.stderr));
        let from_file = said.lines().filter(|l| l.contains(&format!("{role}.toml:"))).count();
        assert!(from_file >= 2, "{role}: settings from the file\n{said}");
    }
}

#[test]
fn the_package_holds_the_binary_units_configuration_and_docs() {
    let o = Command::new("bash").arg(repo().join("scripts/package-deb.sh")).arg(vipcast()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deb = repo().join(String::from_utf8_lossy(&o.stdout).trim());
    let contents = Command::new("dpkg-deb").arg("--contents").arg(&deb).output().unwrap();
    let listing = String::from_utf8_lossy(&contents.stdout);
    for path in [
        "./usr/bin/vipcast",
        "./lib/systemd/system/vipcast-controller.service",
        "./lib/systemd/system/vipcast-agent.service",
        "./lib/systemd/system/vipcast-replicator.service",
        "./etc/vipcast/controller.toml",
        "./etc/vipcast/agent.toml",
        "./etc/vipcast/replicator.toml",
        "./usr/share/doc/vipcast/DEPLOY.md",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(path)), "{path} missing:\n{listing}");
    }
    let field = |f: &str| {
        let o = Command::new("dpkg-deb").args(["--field"]).arg(&deb).arg(f).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "vipcast");
    assert!(field("Depends").contains("iproute2"));
    let info = Command::new("dpkg-deb").arg("--info").arg(&deb).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("conffiles") && info.contains("postinst"), "{info}");
    let _ = std::fs::remove_file(&deb);
}

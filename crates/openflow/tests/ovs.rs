//! The codec against a real Open vSwitch: a private `ovsdb-server` and
//! `ovs-vswitchd` (userspace `netdev` datapath) run in a namespace of their
//! own, and the test is the bridge's controller. It programs flows and a group
//! with messages built by this crate, checks that OVS accepted every one (a
//! barrier and no ERROR), then reads the tables back with `ovs-ofctl` and
//! compares them, line for line, with what was sent. Requests OVS must refuse
//! come back as ERRORs naming their xid.
//!
//! Skipped when Open vSwitch is not installed, unless `VIPCAST_REQUIRE_OVS` is
//! set (CI sets it: there a missing switch is a failure).

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vipcast_lab::{Netns, unique_id};
use vipcast_openflow::error_msg::{OFPET_BAD_ACTION, OFPET_BAD_INSTRUCTION};
use vipcast_openflow::*;
use vipcast_packet::MacAddr;

const VSWITCHD: &str = "/usr/sbin/ovs-vswitchd";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// The datapath id the bridge is given, to be read back from FEATURES_REPLY.
const DPID: u64 = 0xa1;
/// How long vswitchd may take to connect to the controller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long any one reply (features, barrier) may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// `OFPBIC_BAD_TABLE_ID`: goto-table to a table that is not later in the pipeline.
const OFPBIC_BAD_TABLE_ID: u16 = 2;
/// `OFPBAC_BAD_OUT_GROUP`: a group action naming a group that does not exist.
const OFPBAC_BAD_OUT_GROUP: u16 = 9;

/// One private Open vSwitch in a namespace of its own. Dropping it (also
/// during a panic) stops both daemons, removes the run directory and deletes
/// the namespace with everything still in it.
struct Ovs {
    dir: PathBuf,
    /// Dropped after `Drop::drop` has stopped the daemons.
    ns: Netns,
}

impl Ovs {
    /// Namespace `vof-<id>` (loopback up) and run directory
    /// `/run/vipcast/ovs-test-<id>/` with `ovsdb-server` and `ovs-vswitchd`
    /// running, their sockets, pidfiles, logs and database in that directory.
    fn start(id: &str) -> Ovs {
        let ns = Netns::new(format!("vof-{id}")).expect("create namespace");
        let dir = PathBuf::from(format!("/run/vipcast/ovs-test-{id}"));
        // From here on the guard cleans up whatever has been started.
        let ovs = Ovs { dir, ns };
        std::fs::create_dir_all(&ovs.dir).expect("create run directory");
        let d = ovs.dir.display().to_string();
        run(ovs.env(&mut Command::new("ovsdb-tool")).args(["create", &format!("{d}/conf.db"), SCHEMA]));
        run(ovs.env(&mut ovs.ns.command("ovsdb-server")).args([
            &format!("{d}/conf.db"),
            &format!("--remote=punix:{d}/db.sock"),
            &format!("--pidfile={d}/ovsdb-server.pid"),
            &format!("--unixctl={d}/ovsdb-server.ctl"),
            &format!("--log-file={d}/ovsdb-server.log"),
            "-vconsole:off",
            "--detach",
            "--no-chdir",
        ]));
        ovs.vsctl(&["--no-wait", "init"]);
        // Thread counts must be in the database before vswitchd starts.
        ovs.vsctl(&[
            "--no-wait",
            "set",
            "open_vswitch",
            ".",
            "other_config:n-handler-threads=1",
            "other_config:n-revalidator-threads=1",
        ]);
        run(ovs.env(&mut ovs.ns.command("ovs-vswitchd")).args([
            &format!("unix:{d}/db.sock"),
            &format!("--pidfile={d}/ovs-vswitchd.pid"),
            &format!("--unixctl={d}/ovs-vswitchd.ctl"),
            &format!("--log-file={d}/ovs-vswitchd.log"),
            "-vconsole:off",
            "--detach",
            "--no-chdir",
        ]));
        ovs
    }

    /// Points every OVS tool at this instance's directory.
    fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, &self.dir);
        }
        cmd
    }

    fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}/db.sock", self.dir.display());
        run(self.env(&mut Command::new("ovs-vsctl")).args([db.as_str(), "--timeout=10"]).args(args))
    }

    /// `ovs-ofctl -O OpenFlow13 <command> unix:<dir>/br-int.mgmt`, without
    /// statistics and with port numbers instead of names.
    fn ofctl(&self, command: &str) -> String {
        let target = format!("unix:{}/br-int.mgmt", self.dir.display());
        run(self.env(&mut Command::new("ovs-ofctl")).args([
            "-O",
            "OpenFlow13",
            "--no-names",
            "--no-stats",
            command,
            &target,
        ]))
    }

    /// br-int on the netdev datapath, secure fail mode, OpenFlow 1.3 only,
    /// controller `tcp:127.0.0.1:<port>` out of band: all in one transaction,
    /// so the bridge never runs without its controller or in standalone mode.
    fn add_bridge(&self, controller_port: u16) {
        self.vsctl(&[
            "--",
            "add-br",
            "br-int",
            "--",
            "set",
            "bridge",
            "br-int",
            "datapath_type=netdev",
            "fail_mode=secure",
            "protocols=OpenFlow13",
            &format!("other_config:datapath-id={DPID:016x}"),
            "other_config:disable-in-band=true",
            "--",
            "set-controller",
            "br-int",
            &format!("tcp:127.0.0.1:{controller_port}"),
            "--",
            "set",
            "controller",
            "br-int",
            "connection-mode=out-of-band",
        ]);
    }

    /// A veth pair `<name>`/`<name>p` in the namespace with `<name>` a port
    /// of br-int; returns its OpenFlow port number.
    fn add_port(&self, name: &str) -> u32 {
        let peer = format!("{name}p");
        assert!(peer.len() <= 15, "interface name {peer} too long");
        self.ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]).expect("create veth");
        // Up before it joins the bridge: the netdev datapath cannot open a port that is down.
        for dev in [name, peer.as_str()] {
            self.ns.ip(&["link", "set", dev, "up"]).expect("veth up");
        }
        self.vsctl(&["add-port", "br-int", name]);
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let ofport = self.vsctl(&["get", "Interface", name, "ofport"]);
            match ofport.trim().parse::<u32>() {
                Ok(n) if n > 0 && n < OFPP_MAX => return n,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => panic!("port {name} got no ofport (ovs-vsctl says {ofport:?})"),
            }
        }
    }

    /// SIGTERM to the daemon named by `<dir>/<daemon>.pid`, SIGKILL if it is
    /// still there after 2 s. Only a process whose command line names this
    /// instance's directory is signalled (a pidfile can outlive its process).
    fn stop(&self, daemon: &str) {
        let Ok(text) = std::fs::read_to_string(self.dir.join(format!("{daemon}.pid"))) else { return };
        let Ok(pid) = text.trim().parse::<u32>() else { return };
        let dir = self.dir.display().to_string();
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&dir))
            .unwrap_or(false);
        if !ours {
            return;
        }
        for (signal, wait) in [("-TERM", Duration::from_secs(2)), ("-KILL", Duration::from_secs(2))] {
            let _ = Command::new("kill").args([signal, &pid.to_string()]).status();
            let deadline = Instant::now() + wait;
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !alive(pid) {
                return;
            }
        }
        eprintln!("ovs: {daemon} (pid {pid}) survived SIGKILL");
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the switch said about it is the best clue.
            if let Ok(log) = std::fs::read_to_string(self.dir.join("ovs-vswitchd.log")) {
                eprintln!("--- ovs-vswitchd.log ---\n{log}");
            }
        }
        self.stop("ovs-vswitchd");
        self.stop("ovsdb-server");
        let _ = std::fs::remove_dir_all(&self.dir);
        // `ns` is dropped next: it kills what is left in the namespace and deletes it.
    }
}

/// Whether `pid` is a live process. A daemon started with `--detach` belongs
/// to PID 1 once it is gone and stays a zombie until reaped: that counts as gone.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()), Some("Z" | "X")),
        Err(_) => false,
    }
}

/// Runs a command to completion; panics with its stderr if it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP listener on 127.0.0.1 (any port) inside namespace `ns`. The socket
/// keeps its namespace, so it works from any thread once bound.
fn listen_in(ns: &str) -> TcpListener {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        vipcast_sys::enter_netns(&ns).expect("enter namespace");
        TcpListener::bind("127.0.0.1:0").expect("bind controller port")
    })
    .join()
    .expect("listener thread")
}

/// The controller's end of the switch connection.
struct Switch {
    stream: TcpStream,
    framer: Framer,
    next_xid: u32,
    /// What each request was, for error reports.
    sent: HashMap<u32, String>,
}

impl Switch {
    fn accept(listener: &TcpListener) -> Switch {
        listener.set_nonblocking(true).expect("nonblocking listener");
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("vswitchd did not connect within {CONNECT_TIMEOUT:?}: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking stream");
        stream.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        Switch { stream, framer: Framer::new(), next_xid: 1, sent: HashMap::new() }
    }

    /// Sends `body` with a fresh xid and returns the xid.
    fn send(&mut self, what: &str, body: Body) -> u32 {
        let xid = self.next_xid;
        self.next_xid += 1;
        self.send_xid(xid, body);
        self.sent.insert(xid, what.to_string());
        xid
    }

    fn send_xid(&mut self, xid: u32, body: Body) {
        let bytes = Message::new(xid, body).to_bytes().expect("encode");
        self.stream.write_all(&bytes).expect("send to switch");
    }

    /// The next message other than an ECHO_REQUEST (those are answered here).
    fn recv(&mut self, deadline: Instant) -> Message {
        let mut buf = [0u8; 65536];
        loop {
            if let Some(m) = self.framer.next_message().expect("decode a message from the switch") {
                if let Body::EchoRequest(data) = m.body {
                    self.send_xid(m.xid, Body::EchoReply(data));
                    continue;
                }
                return m;
            }
            assert!(Instant::now() < deadline, "no message from the switch in time");
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("the switch closed the connection"),
                Ok(n) => self.framer.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading from the switch: {e}"),
            }
        }
    }

    /// HELLO both ways, then FEATURES; returns the switch's features.
    fn handshake(&mut self) -> FeaturesReply {
        self.send("hello", Body::Hello(Hello::default()));
        let deadline = Instant::now() + REPLY_TIMEOUT;
        match self.recv(deadline).body {
            Body::Hello(h) => assert!(h.supports_1_3(), "switch HELLO without OpenFlow 1.3: {h:?}"),
            other => panic!("expected HELLO first, got {other:?}"),
        }
        let xid = self.send("features request", Body::FeaturesRequest);
        loop {
            let m = self.recv(deadline);
            match m.body {
                Body::FeaturesReply(f) if m.xid == xid => return f,
                Body::Error(e) => panic!("{}", self.describe(&e)),
                _ => {} // port status and the like
            }
        }
    }

    /// Sends a BARRIER_REQUEST and reads up to its reply; returns the ERRORs
    /// that arrived before it (OVS answers every earlier request first).
    fn barrier(&mut self) -> Vec<ErrorMsg> {
        let xid = self.send("barrier", Body::BarrierRequest);
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut errors = Vec::new();
        loop {
            let m = self.recv(deadline);
            match m.body {
                Body::BarrierReply if m.xid == xid => return errors,
                Body::BarrierReply => panic!("BARRIER_REPLY with xid {} for request {xid}", m.xid),
                Body::Error(e) => errors.push(e),
                _ => {}
            }
        }
    }

    /// An ERROR, decoded, with the request it names.
    fn describe(&self, e: &ErrorMsg) -> String {
        let request = e.request_xid().and_then(|x| self.sent.get(&x).map(|w| format!("{w} (xid {x})")));
        format!("switch ERROR {e} for {}", request.unwrap_or_else(|| "an unknown request".into()))
    }
}

/// The non-empty lines of an `ovs-ofctl dump-*` output without its reply
/// header (`OFPST_FLOW reply (OF1.3) (xid=0x2):`), trimmed, as a set.
fn entries(dump: &str) -> BTreeSet<String> {
    dump.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("OFPST_")).map(String::from).collect()
}

fn set(lines: &[String]) -> BTreeSet<String> {
    lines.iter().cloned().collect()
}

#[test]
fn open_vswitch_accepts_and_reports_what_the_codec_sends() {
    if !Path::new(VSWITCHD).exists() && std::env::var_os("VIPCAST_REQUIRE_OVS").is_none() {
        eprintln!("SKIPPED: {VSWITCHD} is missing (install openvswitch-switch, or set VIPCAST_REQUIRE_OVS=1 to fail)");
        return;
    }
    let t0 = Instant::now();
    let id = unique_id();
    let ovs = Ovs::start(&id);
    let listener = listen_in(ovs.ns.name());
    let port = listener.local_addr().expect("listener address").port();
    ovs.add_bridge(port);
    let p1 = ovs.add_port(&format!("vof{id}a"));
    let p2 = ovs.add_port(&format!("vof{id}b"));
    assert_ne!(p1, p2);
    let t_up = t0.elapsed();

    let mut sw = Switch::accept(&listener);
    let features = sw.handshake();
    assert_eq!(features.datapath_id, DPID, "datapath id from other_config:datapath-id");
    assert!(features.n_tables > 0, "n_tables {}", features.n_tables);
    let t_connected = t0.elapsed();

    // What vipcast's agent programs: an ARP responder for a VIP; traffic from
    // a VM port tagged with its VNI in metadata; known unicast to a remote
    // chassis through the tunnel fields; BUM to a flooding group.
    let vip = Ipv4Addr::new(192, 168, 10, 100);
    let vip_mac = MacAddr([0x02, 0, 0, 0, 0, 0x64]);
    let remote_vm = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
    let remote_chassis = Ipv4Addr::new(10, 255, 0, 11);
    let multicast = MacAddr([0x01, 0, 0, 0, 0, 0]);
    let vni: u64 = 100;
    let vni_meta = OxmField::Metadata { value: vni, mask: None };

    let arp = FlowMod {
        cookie: 0x1,
        ..FlowMod::add(0, 100, arp_request_match(vip), vec![Instruction::ApplyActions(arp_responder(vip_mac, vip))])
    };
    sw.send("ARP responder flow", Body::FlowMod(arp));
    let from_vm = FlowMod::add(
        0,
        50,
        Match::new().with(OxmField::InPort(p1)),
        vec![Instruction::WriteMetadata { metadata: vni, mask: u64::MAX }, Instruction::GotoTable(1)],
    );
    sw.send("in_port flow", Body::FlowMod(from_vm));
    let unicast = FlowMod::add(
        1,
        100,
        Match::new().with(vni_meta.clone()).with(OxmField::eth_dst(remote_vm)),
        vec![Instruction::ApplyActions(vec![
            Action::SetField(OxmField::tunnel_id(vni)),
            Action::SetField(OxmField::TunIpv4Dst { value: remote_chassis, mask: None }),
            Action::output(p2),
        ])],
    );
    sw.send("unicast tunnel flow", Body::FlowMod(unicast));
    let group = GroupMod {
        command: GroupModCommand::Add,
        group_type: GroupType::All,
        group_id: 7,
        buckets: vec![Bucket::new(vec![Action::output(p1)]), Bucket::new(vec![Action::output(p2)])],
    };
    sw.send("group 7", Body::GroupMod(group));
    let bum = FlowMod::add(
        1,
        50,
        Match::new().with(vni_meta).with(OxmField::EthDst { value: multicast, mask: Some(multicast) }),
        vec![Instruction::ApplyActions(vec![Action::Group(7)])],
    );
    sw.send("BUM flow", Body::FlowMod(bum));
    let errors = sw.barrier();
    let described: Vec<String> = errors.iter().map(|e| sw.describe(e)).collect();
    assert!(described.is_empty(), "the switch refused requests:\n{}", described.join("\n"));
    let t_programmed = t0.elapsed();

    // OVS's own rendering of what it installed, field by field.
    let want_flows = set(&[
        "cookie=0x1, priority=100,arp,arp_tpa=192.168.10.100,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:00:64->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:02:00:00:00:00:64->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:192.168.10.100->arp_spa,IN_PORT".into(),
        format!("priority=50,in_port={p1} actions=write_metadata:0x64,goto_table:1"),
        format!("table=1, priority=100,metadata=0x64,dl_dst=02:00:00:00:00:02 actions=set_field:0x64->tun_id,set_field:10.255.0.11->tun_dst,output:{p2}"),
        "table=1, priority=50,metadata=0x64,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=group:7".into(),
    ]);
    let want_groups = set(&[format!("group_id=7,type=all,bucket=actions=output:{p1},bucket=actions=output:{p2}")]);
    let flows = entries(&ovs.ofctl("dump-flows"));
    assert_eq!(flows, want_flows, "dump-flows");
    assert_eq!(entries(&ovs.ofctl("dump-groups")), want_groups, "dump-groups");

    // Requests OVS must refuse: each ERROR names the xid of its request.
    let backwards = sw.send(
        "goto_table 0 from table 1",
        Body::FlowMod(FlowMod::add(1, 10, Match::new(), vec![Instruction::GotoTable(0)])),
    );
    let no_group = sw.send(
        "group 99 that does not exist",
        Body::FlowMod(FlowMod::add(0, 10, Match::new(), vec![Instruction::ApplyActions(vec![Action::Group(99)])])),
    );
    let errors = sw.barrier();
    let got: Vec<(Option<u32>, u16, u16)> = errors.iter().map(|e| (e.request_xid(), e.err_type, e.code)).collect();
    let described: Vec<String> = errors.iter().map(|e| sw.describe(e)).collect();
    assert_eq!(
        got,
        vec![
            (Some(backwards), OFPET_BAD_INSTRUCTION, OFPBIC_BAD_TABLE_ID),
            (Some(no_group), OFPET_BAD_ACTION, OFPBAC_BAD_OUT_GROUP),
        ],
        "errors: {described:#?}"
    );
    // The codec's names for them agree with the spec's.
    assert!(described[0].starts_with("switch ERROR OFPET_BAD_INSTRUCTION/OFPBIC_BAD_TABLE_ID "), "{}", described[0]);
    assert!(described[1].starts_with("switch ERROR OFPET_BAD_ACTION/OFPBAC_BAD_OUT_GROUP "), "{}", described[1]);
    // ...and nothing of them was installed.
    assert_eq!(entries(&ovs.ofctl("dump-flows")), want_flows, "dump-flows after the refused requests");

    eprintln!(
        "ovs: up with two ports in {t_up:?}, controller connected at {t_connected:?}, \
         programmed and confirmed at {t_programmed:?}, all checks done at {:?}",
        t0.elapsed()
    );
    drop(sw);
    let t_drop = Instant::now();
    drop(ovs);
    eprintln!("ovs: torn down in {:?}", t_drop.elapsed());
}

//! The agent's decisions in virtual time, executed against a recording data
//! plane: claims and their de-duplication, re-announcing moved VIPs,
//! link-down and dead-chassis assistance, and why an agent restart never
//! moves a VIP.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vipcast_api::AssistFault;
use vipcast_client::Synced;
use vipcast_model::view::ChassisView;
use vipcast_model::{Chassis, Liveness, Object, Owner, Port, Role, State, Subnet, Vip, VipSpec, Vpc};
use vipcast_packet::MacAddr;
use vipcast_packet::announce::{AnnounceKind, Announcement};
use vipcast_packet::vrrp::{Version, VrrpRepr};

use super::*;
use crate::dataplane::Dataplane;
use crate::plan::Plan;
use crate::ports::{Frame, Seen};
use crate::{Call, Config, perform};

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]); // pay1 on hv1 (this chassis)
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]); // pay2 on hv2
const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]); // client on hv1
const VIP: &str = "192.168.10.100";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// VPC prod (VNI 100): pay1 and client on hv1 (this chassis), pay2 on hv2;
/// pay-vip's members are pay1 and pay2.
fn state(owner: Option<(&str, MacAddr, &str, u64)>, hv2_dead: bool, assist: bool) -> Synced {
    let mut s = State::default();
    s.put(Object::Vpc(Vpc {
        name: "prod".into(),
        vni: 100,
        bum: vipcast_model::BumMode::Headend,
        arp_suppression: true,
        assist,
        encap: vipcast_model::Encap::Vxlan,
    }));
    s.put(Object::Subnet(Subnet {
        vpc: "prod".into(),
        name: "web".into(),
        cidr: "192.168.10.0/24".parse().unwrap(),
        gateway: None,
    }));
    for (name, underlay, dead) in [("hv1", "10.0.0.1", false), ("hv2", "10.0.0.2", hv2_dead)] {
        s.put(Object::Chassis(Chassis {
            name: name.into(),
            underlay_ip: ip(underlay),
            role: Role::Hypervisor,
            dataplane: vipcast_model::Dataplane::Kernel,
            liveness: dead.then_some(Liveness { alive: false, since_ms: 1, last_heard_ms: 1 }),
        }));
    }
    for (name, chassis, mac, addr) in [
        ("pay1", "hv1", A, "192.168.10.11"),
        ("pay2", "hv2", B, "192.168.10.12"),
        ("client", "hv1", C, "192.168.10.13"),
    ] {
        s.put(Object::Port(Port::vm(name, "prod", "web", chassis, mac, ip(addr))));
    }
    let mut vip = Vip::new(VipSpec {
        name: "pay-vip".into(),
        vpc: "prod".into(),
        subnet: "web".into(),
        ip: ip(VIP),
        members: vec!["pay1".into(), "pay2".into()],
    });
    vip.owner = owner.map(|(port, mac, chassis, generation)| Owner {
        port: port.into(),
        mac,
        chassis: chassis.into(),
        generation,
        since: 0,
    });
    s.put(Object::Vip(vip));
    Synced { revision: 1, state: Arc::new(s), snapshot: true, received: true }
}

fn core() -> AgentCore {
    AgentCore::new(CoreConfig { chassis: "hv1".into(), sniff: true, assist: true })
}

fn config() -> Config {
    Config {
        controller: "http://127.0.0.1:1".into(),
        chassis: "hv1".into(),
        underlay_ip: ip("10.0.0.1"),
        role: Role::Hypervisor,
        sniff: true,
        announce_burst: 3,
        assist: true,
        heartbeat: ms(50),
        dataplane: vipcast_model::Dataplane::Kernel,
        openflow_listen: "127.0.0.1:6653".parse().unwrap(),
        ovsdb: String::new(),
        peer: crate::peer::PeerConfig::default(),
        metrics_listen: None,
    }
}

fn announcement(port: &str, mac: MacAddr) -> Seen {
    let a = Announcement { kind: AnnounceKind::GratuitousRequest, ip: ip(VIP), mac, eth_src: mac, vlan: None };
    Seen { port: port.into(), frame: Frame::Announcement(a), at_ms: 1000 }
}

fn advert(priority: u8) -> VrrpRepr {
    VrrpRepr {
        version: Version::V3,
        vrid: 51,
        priority,
        interval_cs: 10,
        auth_type: 0,
        auth_data: [0; 8],
        addresses: vec![ip(VIP)],
    }
}

/// pay1's master advert, as sent by its VM.
fn sent_advert(priority: u8) -> Seen {
    Seen {
        port: "pay1".into(),
        frame: Frame::Advert { eth_src: A, src: ip("192.168.10.11"), dst: ip("224.0.0.18"), advert: advert(priority) },
        at_ms: 1000,
    }
}

/// pay2's (hv2) master advert, delivered to the client port here.
fn delivered_advert() -> Seen {
    Seen {
        port: "client".into(),
        frame: Frame::Delivered {
            eth_src: B,
            eth_dst: MacAddr([1, 0, 0x5e, 0, 0, 18]),
            src: ip("192.168.10.12"),
            dst: ip("224.0.0.18"),
            advert: advert(150),
        },
        at_ms: 1000,
    }
}

/// A data plane that records what it is asked to do.
#[derive(Debug, Default)]
struct Recording {
    ports: Vec<String>,
    programmed: usize,
    into_port: Vec<(String, Vec<u8>)>,
    from_port: Vec<(u32, String, Vec<u8>)>,
}

impl Dataplane for Recording {
    async fn program(
        &mut self,
        _: &ChassisView,
        _: Plan,
        _: &BTreeMap<u32, IpAddr>,
        _: &str,
        _: i64,
        _: bool,
    ) -> crate::metrics::ProgramReport {
        self.programmed += 1;
        Default::default()
    }
    fn port_of(&self, _: u32) -> Option<String> {
        None
    }
    fn has_port(&self, port: &str) -> bool {
        self.ports.iter().any(|p| p == port)
    }
    fn send_to_port(&mut self, port: &str, frame: &[u8]) -> anyhow::Result<()> {
        self.into_port.push((port.into(), frame.to_vec()));
        Ok(())
    }
    fn send_from_port(&mut self, vni: u32, port: &str, frame: &[u8]) -> anyhow::Result<()> {
        self.from_port.push((vni, port.into(), frame.to_vec()));
        Ok(())
    }
}

fn recording() -> Recording {
    Recording { ports: vec!["pay1".into(), "client".into()], ..Recording::default() }
}

fn claims(actions: &[Action]) -> Vec<(String, MacAddr)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Claim { vip, claim, .. } => Some((vip.clone(), claim.mac)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_announcement_is_claimed_once_per_burst_and_never_for_the_known_owner() {
    let t0 = Instant::now();
    let mut c = core();
    assert_eq!(c.on_revision(state(None, false, true), t0), vec![Action::Reconcile { why: "snapshot", read: true }]);
    let first = c.on_seen(announcement("pay1", A), t0);
    assert_eq!(claims(&first), vec![("pay-vip".to_string(), A)]);
    let Action::Claim { claim, port, .. } = &first[0] else { unreachable!() };
    assert_eq!((claim.chassis.as_str(), claim.observed_at, port.as_str()), ("hv1", 1000, "pay1"));
    // keepalived's burst of five: the other four are absorbed.
    for i in 1..5 {
        assert!(c.on_seen(announcement("pay1", A), t0 + ms(i * 20)).is_empty());
    }
    // After the window the claim is made again.
    let again = c.on_seen(announcement("pay1", A), t0 + ms(600));
    assert_eq!(claims(&again).len(), 1);
    // A claim that got no answer is decided here (provisional owner) and
    // claimed again on the provisional schedule, not on every announcement.
    let Action::Claim { claim, .. } = &again[0] else { unreachable!() };
    let failed = c.on_claim_failed("pay-vip", claim, t0 + ms(605));
    assert!(failed.iter().any(|a| matches!(a, Action::Notify { .. })), "{failed:?}");
    assert!(claims(&c.on_seen(announcement("pay1", A), t0 + ms(610))).is_empty());
    let retry = c.on_tick(t0 + ms(605) + provisional::RETRY);
    assert!(retry.iter().any(|a| matches!(a, Action::ClaimAgain { vip, claim } if vip == "pay-vip" && claim.mac == A)));
    // The owner the view already shows is not claimed; nor an unknown port.
    let _ = c.on_revision(state(Some(("pay1", A, "hv1", 1)), false, true), t0 + ms(700));
    assert!(c.on_seen(announcement("pay1", A), t0 + ms(2000)).is_empty());
    assert!(c.on_seen(announcement("nosuch", A), t0 + ms(2000)).is_empty());
    // Sniffing off: never.
    let mut off = AgentCore::new(CoreConfig { chassis: "hv1".into(), sniff: false, assist: true });
    let _ = off.on_revision(state(None, false, true), t0);
    assert!(off.on_seen(announcement("pay1", A), t0).is_empty());
}

#[test]
fn a_moved_vip_is_reannounced_into_every_local_port_but_the_new_owners() {
    let t0 = Instant::now();
    let mut c = core();
    // The first revision is not a move, but what the VMs were told while
    // the agent was away is unknown: the owner is announced to them.
    let first = c.on_revision(state(Some(("pay2", B, "hv2", 1)), false, true), t0);
    let [Action::Reconcile { why: "snapshot", read: true }, Action::Reannounce(r)] = first.as_slice() else {
        panic!("{first:?}")
    };
    assert_eq!((r.mac, r.generation, r.ports.clone()), (B, 1, vec!["client".to_string(), "pay1".to_string()]));
    // The same generation again: nothing to announce.
    assert_eq!(c.on_revision(state(Some(("pay2", B, "hv2", 1)), false, true), t0).len(), 1);
    let moved = c.on_revision(state(Some(("pay1", A, "hv1", 2)), false, true), t0);
    let [Action::Reconcile { .. }, Action::Reannounce(r)] = moved.as_slice() else { panic!("{moved:?}") };
    assert_eq!((r.vip.as_str(), r.mac, r.generation, r.ports.clone()), ("pay-vip", A, 2, vec!["client".to_string()]));
    // Executed: the GARP goes into the client port, announce_burst times.
    let mut dp = recording();
    let call = perform(&mut dp, &config(), Action::Reannounce(r.clone()), t0);
    assert_eq!(call, None);
    assert_eq!(dp.into_port.len(), 3);
    assert!(dp.into_port.iter().all(|(p, f)| p == "client" && *f == r.frame));
    let garp = vipcast_packet::announce::classify(&r.frame).unwrap().unwrap();
    assert_eq!((garp.ip, garp.mac), (ip(VIP), A));
    // Moving to a remote owner: every local port hears it, pay1 included.
    let back = c.on_revision(state(Some(("pay2", B, "hv2", 3)), false, true), t0);
    let [_, Action::Reannounce(r)] = back.as_slice() else { panic!("{back:?}") };
    assert_eq!(r.ports, vec!["client".to_string(), "pay1".to_string()]);
}

#[test]
fn link_down_speaks_for_the_master_once_and_only_in_time() {
    let t0 = Instant::now();
    let mut c = core();
    let _ = c.on_revision(state(Some(("pay1", A, "hv1", 1)), false, true), t0);
    let seen = c.on_seen(sent_advert(150), t0);
    // A new master is reported (at the time the frame was read); the VIP it
    // advertises is already owned so: no claim.
    let [Action::ReportVrrp(report)] = seen.as_slice() else { panic!("{seen:?}") };
    assert_eq!((report.vrid, report.priority, report.chassis.as_str(), report.observed_at), (51, 150, "hv1", 1000));
    assert!(c.on_seen(sent_advert(150), t0 + ms(10)).is_empty(), "the same master again: nothing to report");
    // The port loses carrier 50 ms after the last advert: speak for it.
    let down = c.on_link("pay1", false, t0 + ms(60));
    let [Action::AssistPortDown { master, vni, frames }] = down.as_slice() else { panic!("{down:?}") };
    assert_eq!((*vni, master.port.as_str(), frames.len()), (100, "pay1", 1));
    let (_, _, zero) =
        vipcast_packet::vrrp::parse_frame(&frames[0], vipcast_packet::vrrp::ChecksumPolicy::Strict).unwrap();
    assert_eq!((zero.priority, zero.vrid, zero.addresses.clone()), (0, 51, vec![ip(VIP)]));
    // Executed: three times from pay1 into VNI 100, then the record.
    let mut dp = recording();
    let call = perform(&mut dp, &config(), down[0].clone(), t0);
    assert_eq!(dp.from_port.len(), 3);
    assert!(dp.from_port.iter().all(|(v, p, _)| *v == 100 && p == "pay1"));
    let Some(Call::ReportAssist { vpc, router_id, record }) = call else { panic!("{call:?}") };
    assert_eq!(
        (vpc.as_str(), router_id.as_str(), record.fault, record.by.as_str()),
        ("prod", "51-ipv4", AssistFault::PortDown, "hv1")
    );
    // The same fault again, or the port coming back: nothing more.
    assert!(c.on_link("pay1", false, t0 + ms(61)).is_empty());
    assert!(c.on_link("pay1", true, t0 + ms(62)).is_empty());
    // Too late (the last advert older than Master_Down_Interval, 341 ms).
    let _ = c.on_seen(sent_advert(150), t0 + ms(100));
    assert!(c.on_link("pay1", false, t0 + ms(100) + ms(342)).is_empty());
    // Assistance off for the VPC: the master is not spoken for.
    let mut off = core();
    let _ = off.on_revision(state(Some(("pay1", A, "hv1", 1)), false, false), t0);
    let _ = off.on_seen(sent_advert(150), t0);
    assert!(off.on_link("pay1", false, t0 + ms(10)).is_empty());
}

/// [`state`] with `pay2` marked not eligible to take the VIP.
fn state_pay2_ineligible(owner: Option<(&str, MacAddr, &str, u64)>, hv2_dead: bool) -> Synced {
    let mut synced = state(owner, hv2_dead, true);
    let mut s = (*synced.state).clone();
    let mut vip = s.vips["pay-vip"].clone();
    vip.ineligible = vec!["pay2".into()];
    s.put(Object::Vip(vip));
    synced.state = Arc::new(s);
    synced
}

#[test]
fn no_handover_to_a_member_marked_not_eligible() {
    let t0 = Instant::now();
    // pay1's port goes down; pay2, the only other member, is not eligible.
    let mut c = core();
    let _ = c.on_revision(state_pay2_ineligible(Some(("pay1", A, "hv1", 1)), false), t0);
    let _ = c.on_seen(sent_advert(150), t0);
    assert!(c.on_link("pay1", false, t0 + ms(60)).is_empty());
    // The same with pay2 eligible: spoken for (the control for the above).
    let mut c = core();
    let _ = c.on_revision(state(Some(("pay1", A, "hv1", 1)), false, true), t0);
    let _ = c.on_seen(sent_advert(150), t0);
    assert_eq!(c.on_link("pay1", false, t0 + ms(60)).len(), 1);
    // A dead chassis' master whose only other member (pay1, here) is not
    // eligible is not spoken for either.
    let mut c = core();
    let mut synced = state(Some(("pay2", B, "hv2", 1)), false, true);
    let mut st = (*synced.state).clone();
    let mut vip = st.vips["pay-vip"].clone();
    vip.ineligible = vec!["pay1".into()];
    st.put(Object::Vip(vip.clone()));
    synced.state = Arc::new(st.clone());
    let _ = c.on_revision(synced.clone(), t0);
    let _ = c.on_seen(delivered_advert(), t0);
    let mut dead = (*synced.state).clone();
    let mut hv2 = dead.chassis["hv2"].clone();
    hv2.liveness = Some(Liveness { alive: false, since_ms: 1, last_heard_ms: 1 });
    dead.put(Object::Chassis(hv2));
    let _ = c.on_revision(Synced { revision: 2, state: Arc::new(dead), ..synced }, t0 + ms(50));
    // (Eligible, it is spoken for at 111 ms: a_dead_chassis_master_is_spoken_for_once_its_adverts_stop.)
    assert!(c.on_tick(t0 + ms(111)).is_empty());
}

#[test]
fn a_dead_chassis_master_is_spoken_for_once_its_adverts_stop() {
    let t0 = Instant::now();
    let mut c = core();
    let _ = c.on_revision(state(Some(("pay2", B, "hv2", 1)), false, true), t0);
    assert!(c.on_seen(delivered_advert(), t0).is_empty());
    assert!(!c.wants_tick());
    // hv2 declared dead 50 ms after the advert: its adverts may still come.
    let dead = c.on_revision(state(Some(("pay2", B, "hv2", 1)), true, true), t0 + ms(50));
    assert_eq!(dead, vec![Action::Reconcile { why: "snapshot", read: true }]);
    assert!(c.wants_tick());
    assert!(c.on_tick(t0 + ms(110)).is_empty(), "the next advert not yet 10 ms overdue");
    let spoken = c.on_tick(t0 + ms(111));
    let [Action::AssistChassisDead { master, master_port, frames, silent_ms }] = spoken.as_slice() else {
        panic!("{spoken:?}")
    };
    assert_eq!((master_port.as_deref(), *silent_ms, master.src), (Some("pay2"), 111, ip("192.168.10.12")));
    assert_eq!(frames.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["client"]);
    assert!(!c.wants_tick());
    assert!(c.on_tick(t0 + ms(135)).is_empty(), "spoken for once");
    let mut dp = recording();
    let call = perform(&mut dp, &config(), spoken[0].clone(), t0);
    assert_eq!(dp.into_port.len(), 3);
    assert!(matches!(call, Some(Call::ReportAssist { record, .. }) if record.fault == AssistFault::ChassisDead));
}

#[test]
fn an_agent_restart_never_speaks_for_anyone() {
    let t0 = Instant::now();
    // A restarted agent finds hv2 dead in its first revision: it has seen no
    // advert of pay2's, so there is no one to speak for.
    let mut c = core();
    let first = c.on_revision(state(Some(("pay2", B, "hv2", 1)), true, true), t0);
    assert!(!first.iter().any(|a| a.assist_record().is_some()), "{first:?}");
    assert!(!c.wants_tick());
    assert!(c.on_tick(t0 + ms(200)).is_empty());
    // Adverts seen, then the death comes after Master_Down_Interval: the
    // backups may have taken over already, so it is refused.
    let _ = c.on_seen(delivered_advert(), t0);
    assert!(c.on_revision(state(Some(("pay2", B, "hv2", 1)), true, true), t0 + ms(400)).len() == 1);
    assert!(!c.wants_tick());
    // A master restarting on this chassis (its port flapping down before any
    // advert was seen) is not spoken for either.
    assert!(c.on_link("pay1", false, t0 + ms(500)).is_empty());
}

#[test]
fn a_peer_seen_down_is_spoken_for_without_the_controller_once_its_adverts_stop() {
    let t0 = Instant::now();
    let mut c = core();
    let _ = c.on_revision(state(Some(("pay2", B, "hv2", 1)), false, true), t0);
    // Nothing heard from pay2's master yet: no one to watch.
    assert!(c.peers_wanted().is_empty());
    assert!(c.on_seen(delivered_advert(), t0).is_empty());
    // Its chassis is watched, and only it.
    let wanted = c.peers_wanted();
    assert_eq!(wanted.into_iter().collect::<Vec<_>>(), [("hv2".to_string(), ip("10.0.0.2"))]);
    // The peer watch says hv2 is down 40 ms after the advert: the next may
    // still come (it would at 100 ms), so wait for it.
    assert!(c.on_peer("hv2", true, t0 + ms(40)).is_empty());
    assert!(c.wants_tick());
    assert!(c.on_tick(t0 + ms(110)).is_empty());
    let spoken = c.on_tick(t0 + ms(111));
    assert!(matches!(spoken.as_slice(), [Action::AssistChassisDead { silent_ms: 111, .. }]), "{spoken:?}");
    assert!(!c.wants_tick());
    // Spoken for, its chassis is no longer watched, so no longer known to
    // be down: when it advertises again (its chassis back), it is a live
    // master, not one to speak for at once.
    let wanted = c.peers_wanted();
    assert!(wanted.is_empty());
    c.forget_peers(&|ch| wanted.contains_key(ch));
    let _ = c.on_seen(delivered_advert(), t0 + ms(1000));
    for t in [1005, 1050, 1099, 1111, 1200] {
        assert!(c.on_tick(t0 + ms(t)).is_empty(), "spoke for a master heard again at {t} ms");
    }
    assert!(!c.wants_tick());
}

#[test]
fn a_peer_seen_down_whose_master_still_advertises_is_not_spoken_for() {
    // An agent restarting on hv2, or the echo path cut while the adverts
    // still arrive (through a replicator): the peer is down, the master is not.
    let t0 = Instant::now();
    let mut c = core();
    let _ = c.on_revision(state(Some(("pay2", B, "hv2", 1)), false, true), t0);
    let _ = c.on_seen(delivered_advert(), t0);
    assert!(c.on_peer("hv2", true, t0 + ms(40)).is_empty());
    for i in 1..20u64 {
        let _ = c.on_seen(delivered_advert(), t0 + ms(100 * i));
        for t in [100 * i + 5, 100 * i + 50, 100 * i + 99] {
            assert!(c.on_tick(t0 + ms(t)).is_empty(), "spoke for a master advertising at {t} ms");
        }
    }
    // Back up: forgotten; silence later is the controller's to judge.
    assert!(c.on_peer("hv2", false, t0 + ms(2000)).is_empty());
    assert!(c.on_tick(t0 + ms(2200)).is_empty());
    assert!(!c.wants_tick());
}

fn notice(seq: u64, mac: MacAddr, chassis: &str, base: u64, sent_ms: u64) -> Notice {
    Notice {
        seq,
        sent_ms,
        vip: "pay-vip".into(),
        base,
        claim: Claim { mac, chassis: chassis.into(), source: ClaimSource::Agent, observed_at: sent_ms },
    }
}

fn reannounced(actions: &[Action]) -> Vec<(MacAddr, u64, Vec<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reannounce(r) => Some((r.mac, r.generation, r.ports.clone())),
            _ => None,
        })
        .collect()
}

fn view_owner(c: &AgentCore) -> Option<(MacAddr, String, u64)> {
    c.view().unwrap().vpcs["prod"].vips[0].owner.clone()
}

#[test]
fn with_the_controller_away_a_failover_is_decided_here_told_and_yields_to_the_controller() {
    let t0 = Instant::now();
    let mut c = core();
    let _ = c.on_revision(state(Some(("pay2", B, "hv2", 1)), false, true), t0);
    assert!(c.on_controller(false).is_empty());
    // pay1 (local) announces the VIP: claimed as always, and decided here
    // at once: programmed, re-announced to the client, told to hv2.
    let got = c.on_seen(announcement("pay1", A), t0);
    assert_eq!(claims(&got), vec![("pay-vip".to_string(), A)]);
    assert!(got.contains(&Action::Reconcile { why: "provisional owner", read: false }), "{got:?}");
    assert_eq!(reannounced(&got), vec![(A, 2, vec!["client".to_string()])]);
    let Some(Action::Notify { notice, to }) = got.iter().find(|a| matches!(a, Action::Notify { .. })) else {
        panic!("{got:?}")
    };
    assert_eq!(
        (notice.base, notice.claim.mac, notice.claim.observed_at, to.clone()),
        (1, A, 1000, vec![ip("10.0.0.2")])
    );
    assert_eq!(view_owner(&c), Some((A, "hv1".into(), 2)));
    // The rest of the burst changes nothing.
    assert!(c.on_seen(announcement("pay1", A), t0 + ms(20)).is_empty());
    // Claimed and told again every RETRY until the controller answers.
    assert!(c.on_tick(t0 + ms(100)).is_empty());
    let retry = c.on_tick(t0 + provisional::RETRY);
    assert_eq!(retry.iter().filter(|a| matches!(a, Action::ClaimAgain { .. } | Action::Notify { .. })).count(), 2);
    // The stream is back: claimed again at once.
    let back = c.on_controller(true);
    assert!(
        matches!(back.as_slice(), [Action::ClaimAgain { claim, .. }] if claim.mac == A && claim.observed_at == 1000)
    );
    // The controller agrees (generation 2, pay1): nothing moves again.
    let agreed = c.on_revision(state(Some(("pay1", A, "hv1", 2)), false, true), t0 + ms(600));
    assert_eq!(agreed, vec![Action::Reconcile { why: "snapshot", read: true }]);
    assert!(c.provisional().is_empty());
    assert!(!c.wants_slow_tick());

    // The controller decides otherwise: its owner wins and is re-announced.
    let mut d = core();
    let _ = d.on_revision(state(Some(("pay2", B, "hv2", 1)), false, true), t0);
    let _ = d.on_controller(false);
    let _ = d.on_seen(announcement("pay1", A), t0);
    let theirs = d.on_revision(state(Some(("pay2", B, "hv2", 3)), false, true), t0 + ms(50));
    assert_eq!(reannounced(&theirs), vec![(B, 3, vec!["client".to_string(), "pay1".to_string()])]);
    assert!(d.provisional().is_empty());
    // A claim refused (answered without this owner): dropped, reverted.
    let mut e = core();
    let _ = e.on_revision(state(Some(("pay2", B, "hv2", 1)), false, true), t0);
    let _ = e.on_controller(false);
    let _ = e.on_seen(announcement("pay1", A), t0);
    let refused = e.on_claim_answered("pay-vip", A, Some((B, "hv2")), t0 + ms(10));
    assert_eq!(reannounced(&refused), vec![(B, 1, vec!["client".to_string(), "pay1".to_string()])]);
    // A non-member's announcement is never decided here.
    let mut f = core();
    let _ = f.on_revision(state(Some(("pay2", B, "hv2", 1)), false, true), t0);
    let _ = f.on_controller(false);
    let spoof = f.on_seen(announcement("client", C), t0);
    assert!(!spoof.iter().any(|a| matches!(a, Action::Notify { .. } | Action::Reannounce(_))), "{spoof:?}");
}

#[test]
fn a_notice_from_another_chassis_is_decided_again_here_and_lapses_without_refresh() {
    let t0 = Instant::now();
    let mut c = core();
    let _ = c.on_revision(state(Some(("pay1", A, "hv1", 1)), false, true), t0);
    // hv2 says pay2 announced the VIP: re-pointed and re-announced here.
    let got = c.on_notice(notice(10, B, "hv2", 1, 5_000), 5_000, t0);
    assert!(got.contains(&Action::Reconcile { why: "provisional owner told", read: false }));
    assert_eq!(reannounced(&got), vec![(B, 2, vec!["client".to_string(), "pay1".to_string()])]);
    assert_eq!(view_owner(&c), Some((B, "hv2".into(), 2)));
    // A replay, a notice from this chassis, from an unknown one, a MAC that
    // is no member on the sender, a clock 31 s off: nothing.
    assert!(c.on_notice(notice(10, B, "hv2", 1, 5_000), 5_000, t0).is_empty());
    assert!(c.on_notice(notice(11, A, "hv1", 1, 5_000), 5_000, t0).is_empty());
    assert!(c.on_notice(notice(12, B, "hv9", 1, 5_000), 5_000, t0).is_empty());
    assert!(c.on_notice(notice(13, A, "hv2", 1, 5_000), 5_000, t0).is_empty());
    assert!(c.on_notice(notice(14, B, "hv2", 1, 5_000), 36_001, t0).is_empty());
    assert_eq!(view_owner(&c), Some((B, "hv2".into(), 2)));
    // Refreshed at 1 s; not refreshed after: reverts TTL later.
    assert!(c.on_notice(notice(15, B, "hv2", 1, 6_000), 6_000, t0 + ms(1000)).is_empty());
    assert!(c.on_tick(t0 + provisional::TTL + ms(500)).iter().all(|a| !matches!(a, Action::Reannounce(_))));
    let lapsed = c.on_tick(t0 + ms(1000) + provisional::TTL + ms(1));
    assert_eq!(reannounced(&lapsed), vec![(A, 1, vec!["client".to_string()])]);
    assert_eq!(view_owner(&c), Some((A, "hv1".into(), 1)));
    // The controller has moved on past the notice's base: ignored.
    let _ = c.on_revision(state(Some(("pay1", A, "hv1", 4)), false, true), t0 + ms(5000));
    assert!(c.on_notice(notice(16, B, "hv2", 3, 9_000), 9_000, t0 + ms(5000)).is_empty());
}

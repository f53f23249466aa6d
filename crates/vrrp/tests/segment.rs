//! Several VRRP routers on a simulated segment in virtual time.
//!
//! Numbers used throughout (1 s interval, so v2 and v3 agree):
//! Skew_Time = (256 - p) / 256 s: p=100 0.609375 s, p=150 0.4140625 s,
//! p=200 0.21875 s, p=255 0.00390625 s; Master_Down_Interval = 3 s + skew.
//! Latency is zero unless a test says otherwise.

mod sim;

use std::time::Duration;

use sim::{Segment, Variant, assert_transition, ip, us, v3};
use vipcast_vrrp::{AnnounceReason, Config, Reason, StartAs, State, Track, Tracked, Version};

const SKEW_100: u64 = 609_375;
const MDI_100: u64 = 3_609_375;
const MDI_200: u64 = 3_218_750;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Election by priority: the highest priority's Master_Down_Timer fires first
/// (3.21875 s for p=200) and its advert resets the others' timers, so it is
/// the only router that ever becomes master, in every variant.
#[test]
fn election_by_priority() {
    for v in Variant::ALL {
        let mut seg = Segment::new(vec![v.config(1, 3, 100), v.config(2, 3, 200), v.config(3, 3, 150)]);
        seg.startup_all();
        for i in 0..3 {
            assert_transition(&seg, i, State::Backup, Duration::ZERO, Reason::Startup);
        }
        seg.run_to(secs(60));
        assert_transition(&seg, 1, State::Master, us(MDI_200), Reason::MasterDown);
        let masters: Vec<_> = seg.log.iter().filter(|t| t.change.to == State::Master).collect();
        assert_eq!(masters.len(), 1, "{v:?}: {masters:#?}");
        assert_eq!(seg.masters(), vec![1]);
        // Adverts at 3.21875 + k s, k = 0..=56, up to 60 s.
        assert_eq!(seg.routers[1].sent.len(), 57, "{v:?}");
        assert_eq!(
            seg.routers[0].inst.master().map(|m| (m.addr, m.priority)),
            Some((seg.routers[1].inst.config().primary_ip, 200))
        );
        // Announcements: the burst on becoming master and the second one 5 s later.
        assert_eq!(
            seg.routers[1].announces,
            vec![(us(MDI_200), AnnounceReason::BecameMaster, 5), (us(MDI_200) + secs(5), AnnounceReason::Delayed, 5)]
        );
        if v == Variant::V3Unicast {
            // Each advert went to each of the two peers.
            assert_eq!(seg.routers[0].heard.len(), 57);
        }
    }
}

/// Priority 255 owns the address: Master at once on startup (RFC 5798 §6.4.1),
/// and a running lower-priority master yields to its first advert.
#[test]
fn address_owner_is_master_at_startup() {
    let mut seg = Segment::new(vec![v3(1, 255), v3(2, 100)]);
    seg.startup_all();
    assert_transition(&seg, 0, State::Master, Duration::ZERO, Reason::AddressOwner);
    assert!(seg.routers[0].accept, "an address owner always accepts");
    seg.run_to(secs(30));
    assert_eq!(seg.masters(), vec![0]);
    assert_eq!(seg.entered(1, State::Master), vec![]);

    // Owner joins late: B became master at 3.609375, yields at 10 s.
    let mut seg = Segment::new(vec![v3(1, 255), v3(2, 100)]);
    seg.startup(1);
    seg.run_to(secs(10));
    assert_transition(&seg, 1, State::Master, us(MDI_100), Reason::MasterDown);
    seg.startup(0);
    seg.run_to(secs(30));
    assert_transition(&seg, 1, State::Backup, secs(10), Reason::HigherPriority);
    assert_eq!(seg.masters(), vec![0]);
}

/// Equal priorities: the larger primary address wins between two masters
/// (RFC 5798 §6.4.3). With 1 ms latency both time out at 3.609375 s, both
/// become master, and the smaller address yields when the other's advert
/// arrives 1 ms later; the winner re-announces on hearing the loser.
#[test]
fn tie_broken_by_larger_address() {
    for v in [Variant::V3Ipv4, Variant::V3Ipv6, Variant::V2] {
        let mut seg = Segment::new(vec![v.config(1, 2, 100), v.config(2, 2, 100)]);
        seg.latency = Duration::from_millis(1);
        seg.startup_all();
        seg.run_to(secs(20));
        assert_transition(&seg, 0, State::Master, us(MDI_100), Reason::MasterDown);
        assert_transition(&seg, 1, State::Master, us(MDI_100), Reason::MasterDown);
        assert_transition(&seg, 0, State::Backup, us(MDI_100 + 1_000), Reason::HigherPriority);
        assert_eq!(seg.masters(), vec![1], "{v:?}");
        assert!(seg.routers[1].announces.contains(&(us(MDI_100 + 1_000), AnnounceReason::LowerPriorityAdvert, 5)));
    }

    // A later joiner with an equal priority and a larger address does not
    // preempt: a backup accepts adverts of equal priority (§6.4.2).
    let mut seg = Segment::new(vec![v3(1, 100), v3(2, 100)]);
    seg.startup(0);
    seg.run_to(secs(10));
    seg.startup(1);
    seg.run_to(secs(60));
    assert_eq!(seg.masters(), vec![0]);
}

/// Preemption on (the default): a higher-priority backup discards the
/// master's adverts and takes over when its own Master_Down_Timer fires,
/// 3.21875 s after it started; the old master yields to its first advert.
#[test]
fn preemption_on_and_off() {
    let mut seg = Segment::new(vec![v3(1, 100), v3(2, 200)]);
    seg.startup(0);
    seg.run_to(secs(10));
    seg.startup(1);
    seg.run_to(secs(60));
    let t = secs(10) + us(MDI_200);
    assert_transition(&seg, 1, State::Master, t, Reason::Preempting);
    assert_transition(&seg, 0, State::Backup, t, Reason::HigherPriority);
    assert_eq!(seg.routers[1].inst.stats().lower_priority_discarded, 3); // 10.609375, 11.6.., 12.6..
    assert_eq!(seg.masters(), vec![1]);

    // nopreempt: the higher priority accepts the lower master forever.
    let mut b = v3(2, 200);
    b.preempt = false;
    let mut seg = Segment::new(vec![v3(1, 100), b]);
    seg.startup(0);
    seg.run_to(secs(10));
    seg.startup(1);
    seg.run_to(secs(120));
    assert_eq!(seg.masters(), vec![0]);
    assert_eq!(seg.entered(1, State::Master), vec![]);
}

/// preempt_delay 5 s: the first lower-priority advert (10.609375 s) starts the
/// delay; adverts are accepted until 15.609375 s, the one at exactly
/// 15.609375 s is discarded, and the Master_Down_Timer reset by the advert at
/// 14.609375 s fires at 14.609375 + 3.21875 = 17.828125 s (not 13.21875 s).
#[test]
fn preempt_delay() {
    let mut b = v3(2, 200);
    b.preempt_delay = secs(5);
    let mut seg = Segment::new(vec![v3(1, 100), b]);
    seg.startup(0);
    seg.run_to(secs(10));
    seg.startup(1);
    seg.run_to(secs(60));
    assert_transition(&seg, 1, State::Master, us(17_828_125), Reason::Preempting);
    assert_transition(&seg, 0, State::Backup, us(17_828_125), Reason::HigherPriority);
    assert_eq!(seg.entered(1, State::Master).len(), 1);
    assert_eq!(seg.masters(), vec![1]);
}

/// Priority-0 handover: the master shuts down at 20 s and sends priority 0; the
/// backup sets its Master_Down_Timer to Skew_Time and is master at exactly
/// 20.609375 s — not at 19.21875 + 3.609375 = 22.828125 s, which a silent
/// death would cost.
#[test]
fn priority_zero_handover_takes_skew_time() {
    for v in Variant::ALL {
        let mut seg = Segment::new(vec![v.config(1, 2, 200), v.config(2, 2, 100)]);
        seg.startup_all();
        seg.run_to(secs(20));
        seg.shutdown(0);
        assert_eq!(seg.routers[0].sent.last(), Some(&(secs(20), 0)));
        assert!(seg.routers[0].vips.is_empty());
        seg.run_to(secs(40));
        assert_transition(&seg, 0, State::Initialize, secs(20), Reason::Shutdown);
        assert_transition(&seg, 1, State::Master, secs(20) + us(SKEW_100), Reason::MasterStopped);
        assert_eq!(seg.masters(), vec![1], "{v:?}");
        assert_eq!(seg.routers[1].inst.stats().priority_zero_received, 1);
    }
}

/// v3 Skew_Time scales with the (learned) interval, v2's does not: with a 2 s
/// interval the p=100 backup takes over 1.21875 s (v3) or 0.609375 s (v2)
/// after the priority-0 advert, and the election takes 6 s + skew(200):
/// 6.4375 s (v3) or 6.21875 s (v2).
#[test]
fn v2_and_v3_skew_with_a_two_second_interval() {
    for (version, election, handover) in [(Version::V3, 6_437_500, 1_218_750), (Version::V2, 6_218_750, 609_375)] {
        let mk = |host, prio| {
            let mut c = v3(host, prio);
            c.version = version;
            c.advert_interval_cs = 200;
            c
        };
        let mut seg = Segment::new(vec![mk(1, 200), mk(2, 100)]);
        seg.startup_all();
        seg.run_to(secs(20));
        assert_transition(&seg, 0, State::Master, us(election), Reason::MasterDown);
        seg.shutdown(0);
        seg.run_to(secs(30));
        assert_transition(&seg, 1, State::Master, secs(20) + us(handover), Reason::MasterStopped);
    }
}

/// A v3 backup learns Master_Adver_Interval from the master (RFC 5798 §6.4.2):
/// its own interval is 1 s but the master advertises every 3 s, so its
/// Master_Down_Interval is 3 x 3 s + 156/256 x 3 s = 10.828125 s.
#[test]
fn v3_backup_learns_the_master_interval() {
    let mut a = v3(1, 200);
    a.advert_interval_cs = 300;
    let mut seg = Segment::new(vec![a, v3(2, 100)]);
    // A is master at 9 s + 56/256 x 3 s = 9.65625 s; B starts after that
    // (with its own 1 s interval it would otherwise time out first).
    seg.startup(0);
    seg.run_to(secs(10));
    seg.startup(1);
    seg.run_to(secs(13));
    assert_eq!(seg.routers[1].inst.master_adver_interval(), secs(3));
    assert_eq!(seg.routers[1].inst.master_down_interval(), us(10_828_125));
    // A's adverts: 9.65625 + 3k. Crash after the one at 21.65625 s.
    seg.run_to(secs(22));
    seg.crash(0);
    seg.run_to(secs(60));
    assert_transition(&seg, 1, State::Master, us(21_656_250 + 10_828_125), Reason::MasterDown);
}

/// Lost adverts: two in a row are survivable (Master_Down_Interval is three
/// intervals plus skew); losing them for longer, or a silent death, makes the
/// backup master exactly Master_Down_Interval after the last advert it heard.
#[test]
fn lost_adverts_and_silent_death() {
    let mut seg = Segment::new(vec![v3(1, 200), v3(2, 100)]);
    // A -> B adverts lost in [20 s, 22 s) and [40 s, 44 s).
    seg.filter = Some(Box::new(|from, to, t| {
        from == 0 && to == 1 && ((t >= secs(20) && t < secs(22)) || (t >= secs(40) && t < secs(44)))
    }));
    seg.startup_all();
    seg.run_to(secs(30));
    assert_eq!(seg.entered(1, State::Master), vec![], "two lost adverts must not cause a takeover");
    seg.run_to(secs(50));
    // Last advert heard 39.21875 s; 39.21875 + 3.609375 = 42.828125 s. A hears
    // B's lower-priority advert and answers at once, but that answer is lost
    // too; A's periodic advert at 44.21875 s gets through and B yields.
    assert_transition(&seg, 1, State::Master, us(42_828_125), Reason::MasterDown);
    assert_transition(&seg, 1, State::Backup, us(44_218_750), Reason::HigherPriority);
    assert_eq!(seg.masters(), vec![0]);

    // Silent death at 20 s: last advert 19.21875 s, takeover at 22.828125 s;
    // i.e. within (MDI - interval, MDI] of the death.
    let mut seg = Segment::new(vec![v3(1, 200), v3(2, 100)]);
    seg.startup_all();
    seg.run_to(secs(20));
    seg.crash(0);
    seg.run_to(secs(40));
    let t = seg.entered(1, State::Master)[0].at;
    assert_eq!(t, us(22_828_125));
    assert!(t - secs(20) > us(MDI_100) - secs(1) && t - secs(20) <= us(MDI_100));
}

/// Random loss (30 % each way) for 10 virtual minutes: every takeover by the
/// backup happens exactly Master_Down_Interval after the last advert it
/// accepted, never earlier; and the higher priority always wins back.
#[test]
fn random_loss_takeovers_are_exactly_master_down_interval() {
    let mut seg = Segment::new(vec![v3(1, 200), v3(2, 100)]).with_seed(7);
    seg.loss_permille = 300;
    seg.startup_all();
    seg.run_to(secs(600));
    let takeovers: Vec<_> =
        seg.entered(1, State::Master).into_iter().filter(|t| t.change.reason == Reason::MasterDown).collect();
    assert!(takeovers.len() >= 3, "30 % loss should cause some takeovers, got {}", takeovers.len());
    for t in &takeovers {
        // The last advert heard, or the startup at 0 s, reset the timer.
        let last = seg.routers[1].heard.iter().filter(|h| h.0 < t.at).map(|h| h.0).max().unwrap_or_default();
        assert_eq!(t.at - last, us(MDI_100), "takeover at {:?}, last advert {:?}", t.at, last);
    }
    seg.loss_permille = 0;
    seg.run_for(secs(10));
    assert_eq!(seg.masters(), vec![0]);
}

/// Split and heal: {A} | {B, C} at 10 s. C (150) times out
/// 9.21875 + 3.4140625 = 12.6328125 s after A's last advert it heard, so
/// there are two masters during the partition; B follows C. After the heal
/// at 30 s, A's advert at 30.21875 s makes C yield: one master again.
#[test]
fn split_and_heal() {
    let mut seg = Segment::new(vec![v3(1, 200), v3(2, 100), v3(3, 150)]);
    seg.startup_all();
    seg.run_to(secs(10));
    seg.partition(&[0, 1, 1]);
    seg.run_to(secs(30));
    assert_transition(&seg, 2, State::Master, us(12_632_812) + Duration::from_nanos(500), Reason::MasterDown);
    assert_eq!(seg.masters(), vec![0, 2], "two masters while partitioned");
    assert!(seg.routers[0].vips == seg.routers[2].vips && !seg.routers[2].vips.is_empty());
    assert_eq!(seg.routers[1].inst.master().map(|m| m.priority), Some(150));
    seg.heal();
    seg.run_to(secs(60));
    assert_transition(&seg, 2, State::Backup, us(30_218_750), Reason::HigherPriority);
    assert_eq!(seg.masters(), vec![0]);
    assert!(seg.routers[2].vips.is_empty());
    // C yielded before A heard C, so A did not re-announce (see below).
    assert!(!seg.routers[0].announces.iter().any(|a| a.1 == AnnounceReason::LowerPriorityAdvert));

    // Heal at 30.5 s instead: C's advert (30.6328125 s) reaches A first; A
    // answers with an advert, C yields at the same instant, and A announces
    // the address again — it had moved to C during the split.
    let mut seg = Segment::new(vec![v3(1, 200), v3(2, 100), v3(3, 150)]);
    seg.startup_all();
    seg.run_to(secs(10));
    seg.partition(&[0, 1, 1]);
    seg.run_to(Duration::from_millis(30_500));
    seg.heal();
    seg.run_to(secs(60));
    let t = us(30_632_812) + Duration::from_nanos(500);
    assert_transition(&seg, 2, State::Backup, t, Reason::HigherPriority);
    assert!(seg.routers[0].announces.contains(&(t, AnnounceReason::LowerPriorityAdvert, 5)));
    assert!(seg.routers[0].announces.contains(&(t + secs(5), AnnounceReason::Delayed, 5)));
    assert_eq!(seg.masters(), vec![0]);
}

/// Tracking with weights: a failing script (weight -150) drops the master's
/// priority from 200 to 50, below the backup's 100; the backup discards its
/// adverts and takes over MDI(100) after the last one it accepted
/// (19.21875 + 3.609375 = 22.828125 s). When the script recovers at 40 s
/// the original master, now a backup, preempts back: its timer, last reset by
/// B's advert at 39.828125 s, now runs with Skew(200): 43.046875 s.
#[test]
fn tracking_weight_changes_priority() {
    let chk = Tracked::Script("chk".into());
    let mut a = v3(1, 200);
    a.tracks = vec![Track { what: chk.clone(), weight: -150 }];
    let mut seg = Segment::new(vec![a, v3(2, 100)]);
    seg.startup_all();
    seg.run_to(secs(20));
    seg.set_track(0, &chk, false);
    assert_eq!(seg.routers[0].inst.effective_priority(), 50);
    assert_eq!(seg.state(0), State::Master, "a lower priority alone does not make a master leave");
    seg.run_to(secs(40));
    assert_transition(&seg, 1, State::Master, us(22_828_125), Reason::Preempting);
    assert_transition(&seg, 0, State::Backup, us(22_828_125), Reason::HigherPriority);
    seg.set_track(0, &chk, true);
    seg.run_to(secs(60));
    assert_transition(&seg, 0, State::Master, us(43_046_875), Reason::Preempting);
    assert_eq!(seg.masters(), vec![0]);
}

/// FAULT: a weight-0 tracked interface goes down on the master at 20 s. It
/// sends priority 0 and removes its addresses; the backup is master after its
/// skew (20.609375 s). When the interface comes back at 30 s the router
/// starts as a backup and preempts after MDI(200): 33.21875 s.
#[test]
fn weight_zero_tracker_faults() {
    let eth0 = Tracked::Interface("eth0".into());
    let mut a = v3(1, 200);
    a.tracks = vec![Track { what: eth0.clone(), weight: 0 }];
    let mut seg = Segment::new(vec![a.clone(), v3(2, 100)]);
    seg.startup_all();
    seg.run_to(secs(20));
    seg.set_track(0, &eth0, false);
    assert_transition(&seg, 0, State::Fault, secs(20), Reason::TrackFailed);
    assert_eq!(seg.routers[0].sent.last(), Some(&(secs(20), 0)));
    assert_eq!(seg.routers[0].inst.poll_timeout(), None);
    seg.run_to(secs(30));
    assert_transition(&seg, 1, State::Master, secs(20) + us(SKEW_100), Reason::MasterStopped);
    assert!(seg.routers[0].discards.iter().all(|d| matches!(d.1, vipcast_vrrp::Discard::Inactive(State::Fault))));
    seg.set_track(0, &eth0, true);
    assert_transition(&seg, 0, State::Backup, secs(30), Reason::TrackRecovered);
    seg.run_to(secs(40));
    assert_transition(&seg, 0, State::Master, secs(30) + us(MDI_200), Reason::Preempting);

    // Down before startup: straight to FAULT, never an advert.
    let mut seg = Segment::new(vec![a]);
    seg.set_track(0, &eth0, false);
    seg.startup(0);
    seg.run_to(secs(30));
    assert_transition(&seg, 0, State::Fault, Duration::ZERO, Reason::TrackFailed);
    assert!(seg.routers[0].sent.is_empty());
}

/// GARP / NA bursts with keepalived's meanings: 3 on becoming master, 3 more
/// 2 s later, then 1 every 10 s; a zero delay disables the second burst.
#[test]
fn announcement_bursts() {
    let mut a = v3(1, 200);
    a.garp.master_repeat = 3;
    a.garp.master_delay = secs(2);
    a.garp.master_refresh = Some(secs(10));
    let mut seg = Segment::new(vec![a.clone()]);
    seg.startup(0);
    seg.run_to(secs(40));
    let m = us(MDI_200);
    assert_eq!(
        seg.routers[0].announces,
        vec![
            (m, AnnounceReason::BecameMaster, 3),
            (m + secs(2), AnnounceReason::Delayed, 3),
            (m + secs(10), AnnounceReason::Refresh, 1),
            (m + secs(20), AnnounceReason::Refresh, 1),
            (m + secs(30), AnnounceReason::Refresh, 1),
        ]
    );
    a.garp.master_delay = Duration::ZERO;
    a.garp.master_refresh = None;
    let mut seg = Segment::new(vec![a]);
    seg.startup(0);
    seg.run_to(secs(40));
    assert_eq!(seg.routers[0].announces, vec![(m, AnnounceReason::BecameMaster, 3)]);
}

/// keepalived's `state MASTER` on a non-owner: master after one interval plus
/// the smallest skew (1 s + 1/256 s = 1.00390625 s) when alone; with a
/// master already advertising it stays backup.
#[test]
fn start_as_master() {
    let mut a = v3(1, 100);
    a.start_as = StartAs::Master;
    let mut seg = Segment::new(vec![a.clone()]);
    seg.startup(0);
    seg.run_to(secs(5));
    assert_transition(&seg, 0, State::Master, us(1_003_906) + Duration::from_nanos(250), Reason::MasterDown);

    let mut seg = Segment::new(vec![a, v3(2, 200)]);
    seg.startup(1);
    seg.run_to(secs(10));
    seg.startup(0);
    seg.run_to(secs(30));
    assert_eq!(seg.masters(), vec![1]);
}

/// Reconfiguration without a needless state change: the master gets a new
/// priority, a second address, a shorter interval and accept mode, and stays
/// master; only the new address is added and announced. The backup gets a
/// new priority and stays backup, its timer moved by the change of skew.
#[test]
fn reconfigure_keeps_state() {
    let mut seg = Segment::new(vec![v3(1, 200), v3(2, 100)]);
    seg.startup_all();
    seg.run_to(secs(10));
    let notifications = seg.log.len();
    let mut a = v3(1, 210);
    a.addresses.push(ip("10.0.0.101"));
    a.advert_interval_cs = 50;
    a.accept = true;
    seg.reconfigure(0, a);
    assert_eq!(seg.state(0), State::Master);
    assert!(seg.routers[0].vips.contains(&ip("10.0.0.101")) && seg.routers[0].accept);
    assert_eq!(seg.routers[0].announces.last(), Some(&(secs(10), AnnounceReason::AddressesAdded, 5)));
    // The advert already due (10.21875 s) comes before now + 0.5 s, so it stays.
    assert_eq!(seg.routers[0].inst.poll_timeout(), Some(seg.t0 + us(10_218_750)));
    // The backup discards adverts with the new address list until it has it too.
    let mut b = v3(2, 100);
    b.addresses.push(ip("10.0.0.101"));
    seg.reconfigure(1, b.clone());
    seg.run_to(secs(20));
    assert_eq!(seg.log.len(), notifications, "no state change: {:#?}", &seg.log[notifications..]);
    // The backup learned the 0.5 s interval: MDI = 1.5 s + 156/256 x 0.5 s.
    assert_eq!(seg.routers[1].inst.master_down_interval(), us(1_804_687) + Duration::from_nanos(500));
    let before = seg.routers[1].inst.poll_timeout().unwrap();
    b.priority = 150;
    seg.reconfigure(1, b.clone());
    assert_eq!(seg.state(1), State::Backup);
    // Skew at 0.5 s: 156/256 -> 106/256 of 0.5 s, 97.65625 ms earlier.
    assert_eq!(before - seg.routers[1].inst.poll_timeout().unwrap(), us(97_656) + Duration::from_nanos(250));
    seg.run_to(secs(30));
    assert_eq!(seg.log.len(), notifications);

    // Another VRID is another router: refused, nothing changed.
    b.vrid = 52;
    assert!(seg.routers[1].inst.reconfigure(seg.now, b).is_err());
    assert_eq!(seg.routers[1].inst.config().priority, 150);
}

/// A paused router (a stalled VM) fires its timers late and catches up
/// without panicking; a paused master is replaced and yields when it wakes.
#[test]
fn paused_master_yields_when_it_wakes() {
    let mut seg = Segment::new(vec![v3(1, 100), v3(2, 200)]);
    seg.startup_all();
    seg.run_to(secs(10));
    assert_eq!(seg.masters(), vec![1]);
    seg.freeze(1, secs(10));
    seg.run_to(secs(30));
    // Last advert 9.21875 s; A takes over at 12.828125 s; B wakes at 20 s,
    // sends its late advert, A yields.
    assert_transition(&seg, 0, State::Master, us(12_828_125), Reason::MasterDown);
    assert_transition(&seg, 0, State::Backup, secs(20), Reason::HigherPriority);
    assert_eq!(seg.masters(), vec![1]);
}

/// Config validation refuses what the wire cannot carry.
#[test]
fn invalid_configs_are_refused() {
    let ok = v3(1, 100);
    let cases: Vec<(Config, &str)> = vec![
        (Config { vrid: 0, ..ok.clone() }, "vrid"),
        (Config { priority: 0, ..ok.clone() }, "priority"),
        (Config { advert_interval_cs: 0, ..ok.clone() }, "interval 0"),
        (Config { advert_interval_cs: 4096, ..ok.clone() }, "v3 interval"),
        (Config { version: Version::V2, advert_interval_cs: 150, ..ok.clone() }, "v2 fraction"),
        (
            Config { version: Version::V2, primary_ip: ip("fe80::1"), addresses: vec![ip("fd00::1")], ..ok.clone() },
            "v2 v6",
        ),
        (Config { addresses: vec![], ..ok.clone() }, "no address"),
        (Config { addresses: vec![ip("fd00::1")], ..ok.clone() }, "family"),
        (Config { addresses: vec![ip("10.0.0.100"), ip("10.0.0.100")], ..ok.clone() }, "duplicate"),
        (Config { unicast_peers: vec![ip("fe80::2")], ..ok.clone() }, "peer family"),
        (Config { tracks: vec![Track { what: Tracked::Script("x".into()), weight: 300 }], ..ok.clone() }, "weight"),
    ];
    for (c, what) in cases {
        assert!(c.validate().is_err(), "{what} should be refused");
    }
    assert!(ok.validate().is_ok());
}

/// Split and heal with equal priorities: both sides elect a master; after the
/// heal the smaller address yields to the first advert it hears from the
/// larger (RFC 5798 §6.4.3) — no advert storm, one master.
#[test]
fn split_and_heal_equal_priorities() {
    for latency in [Duration::ZERO, Duration::from_millis(2)] {
        let mut seg = Segment::new(vec![v3(1, 100), v3(2, 100)]);
        seg.latency = latency;
        seg.startup(0);
        seg.run_to(secs(5));
        seg.startup(1);
        seg.run_to(secs(10));
        assert_eq!(seg.masters(), vec![0]);
        seg.partition(&[0, 1]);
        seg.run_to(secs(20));
        assert_eq!(seg.masters(), vec![0, 1]);
        seg.heal();
        seg.run_to(secs(25));
        assert_eq!(seg.masters(), vec![1], "latency {latency:?}");
        let sent_by_1 = seg.routers[1].sent.iter().filter(|s| s.0 >= secs(20)).count();
        assert!(sent_by_1 <= 7, "{sent_by_1} adverts in 5 s");
    }
}

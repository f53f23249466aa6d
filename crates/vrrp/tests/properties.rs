//! Property tests: random event sequences on a simulated segment converge to
//! one master; no input sequence makes an instance panic or break its timer
//! invariants.

mod sim;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use sim::{Segment, Variant, ip};
use vipcast_vrrp::{Action, Config, GarpConfig, Instance, StartAs, State, Timer, Track, Tracked, Version, VrrpRepr};

// ----- random event sequences on a segment ------------------------------

#[derive(Debug, Clone)]
struct RouterSpec {
    priority: u8,
    interval_cs: u16,
    preempt: bool,
    preempt_delay_ms: u64,
    start_as_master: bool,
}

#[derive(Debug, Clone)]
enum Ev {
    Startup(usize),
    Shutdown(usize),
    /// Silent death.
    Crash(usize),
    /// Boot again (after a crash or not) with the current config.
    Restart(usize),
    /// Group of each router.
    Partition(Vec<u32>),
    Heal,
    Loss(u32),
    /// Reconfigure to this priority (1..=254).
    Priority(usize, u8),
    /// Weight-0 interface (true) or weight -60 script (false) up or down.
    Track(usize, bool, bool),
    /// A paused VM.
    Freeze(usize, u64),
    Wait(u64),
}

/// Priorities 1..=254, often equal to another router's.
fn priority() -> impl Strategy<Value = u8> {
    prop_oneof![1u8..=254, prop::sample::select(vec![100u8, 150, 200])]
}

fn ev(n: usize) -> impl Strategy<Value = Ev> {
    prop_oneof![
        2 => (0..n).prop_map(Ev::Startup),
        1 => (0..n).prop_map(Ev::Shutdown),
        1 => (0..n).prop_map(Ev::Crash),
        2 => (0..n).prop_map(Ev::Restart),
        1 => prop::collection::vec(0u32..3, n).prop_map(Ev::Partition),
        1 => Just(Ev::Heal),
        1 => (0u32..=1000).prop_map(Ev::Loss),
        2 => ((0..n), priority()).prop_map(|(i, p)| Ev::Priority(i, p)),
        2 => ((0..n), any::<bool>(), any::<bool>()).prop_map(|(i, k, u)| Ev::Track(i, k, u)),
        1 => ((0..n), 0u64..5_000).prop_map(|(i, ms)| Ev::Freeze(i, ms)),
        6 => (0u64..6_000).prop_map(Ev::Wait),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    variant: Variant,
    routers: Vec<RouterSpec>,
    /// Router with priority 255, if any (at most one: two owners is a
    /// configuration error no protocol resolves).
    owner: Option<usize>,
    latency_us: u64,
    seed: u64,
    events: Vec<Ev>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (prop::sample::select(Variant::ALL.to_vec()), 2usize..=4, any::<bool>(), 0u64..3_000, any::<u64>())
        .prop_flat_map(|(variant, n, with_owner, latency_us, seed)| {
            let interval = if variant == Variant::V2 {
                Just(100u16).boxed()
            } else {
                prop::sample::select(vec![20u16, 50, 100, 170, 300]).boxed()
            };
            let spec =
                (priority(), interval, prop::bool::weighted(0.8), prop_oneof![Just(0u64), 0u64..3_000], any::<bool>())
                    .prop_map(|(priority, interval_cs, preempt, preempt_delay_ms, start_as_master)| RouterSpec {
                        priority,
                        interval_cs,
                        preempt,
                        preempt_delay_ms,
                        start_as_master,
                    });
            (
                Just(variant),
                prop::collection::vec(spec, n),
                if with_owner { (0..n).prop_map(Some).boxed() } else { Just(None).boxed() },
                Just(latency_us),
                Just(seed),
                prop::collection::vec(ev(n), 0..40),
            )
        })
        .prop_map(|(variant, routers, owner, latency_us, seed, events)| Scenario {
            variant,
            routers,
            owner,
            latency_us,
            seed,
            events,
        })
}

fn build(s: &Scenario) -> Segment {
    let n = s.routers.len() as u8;
    let configs = s
        .routers
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut c = s.variant.config(i as u8 + 1, n, r.priority);
            if s.owner == Some(i) {
                c.priority = 255;
            }
            c.advert_interval_cs = r.interval_cs;
            c.preempt = r.preempt;
            c.preempt_delay = Duration::from_millis(r.preempt_delay_ms);
            c.start_as = if r.start_as_master { StartAs::Master } else { StartAs::Backup };
            c.tracks = vec![
                Track { what: Tracked::Interface("eth0".into()), weight: 0 },
                Track { what: Tracked::Script("chk".into()), weight: -60 },
            ];
            c
        })
        .collect();
    let mut seg = Segment::new(configs).with_seed(s.seed);
    seg.latency = Duration::from_micros(s.latency_us);
    seg
}

fn apply(seg: &mut Segment, e: &Ev) {
    match e {
        Ev::Startup(i) => seg.startup(*i),
        Ev::Shutdown(i) => seg.shutdown(*i),
        Ev::Crash(i) => seg.crash(*i),
        Ev::Restart(i) => seg.restart(*i),
        Ev::Partition(g) => seg.partition(g),
        Ev::Heal => seg.heal(),
        Ev::Loss(p) => seg.loss_permille = *p,
        Ev::Priority(i, p) => {
            let mut c = seg.routers[*i].inst.config().clone();
            c.priority = *p;
            seg.reconfigure(*i, c);
        }
        Ev::Track(i, iface, up) => {
            let what = if *iface { Tracked::Interface("eth0".into()) } else { Tracked::Script("chk".into()) };
            seg.set_track(*i, &what, *up);
        }
        Ev::Freeze(i, ms) => seg.freeze(*i, Duration::from_millis(*ms)),
        Ev::Wait(ms) => seg.run_for(Duration::from_millis(*ms)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Once the segment is connected, loss-free and quiet for longer than
    /// the worst-case preempt delay plus two Master_Down_Intervals, exactly
    /// one running router is master (none if none runs), it has the highest
    /// priority when every running router preempts, and nothing changes
    /// for another two Master_Down_Intervals.
    #[test]
    fn one_master_once_quiet(s in scenario()) {
        let mut seg = build(&s);
        seg.startup_all();
        for e in &s.events {
            apply(&mut seg, e);
        }
        seg.heal();
        seg.loss_permille = 0;
        let max_int = s.routers.iter().map(|r| Duration::from_millis(u64::from(r.interval_cs) * 10)).max().unwrap();
        // Skew_Time is at most one interval (v3) or 1 s (v2).
        let max_mdi = max_int * 3 + max_int.max(Duration::from_secs(1));
        let max_delay = s.routers.iter().map(|r| Duration::from_millis(r.preempt_delay_ms)).max().unwrap();
        // Frozen routers wake within 5 s.
        let settle = Duration::from_secs(5) + max_delay + max_int * 2 + max_mdi * 2;
        seg.run_for(settle);

        let running: Vec<usize> = (0..seg.routers.len())
            .filter(|i| seg.routers[*i].alive && matches!(seg.state(*i), State::Backup | State::Master))
            .collect();
        let masters = seg.masters();
        prop_assert!(masters.len() <= 1, "masters {:?} at {:?}; log {:#?}", masters, seg.elapsed(), seg.log);
        if !running.is_empty() {
            prop_assert_eq!(masters.len(), 1, "running {:?} but no master", running);
            let all_preempt = running.iter().all(|i| seg.routers[*i].inst.config().preempt);
            if all_preempt {
                let best = running.iter().map(|i| seg.routers[*i].inst.effective_priority()).max().unwrap();
                prop_assert_eq!(seg.routers[masters[0]].inst.effective_priority(), best);
            }
        }
        let quiet_from = seg.elapsed();
        seg.run_for(max_mdi * 2);
        prop_assert_eq!(seg.transitions_since(quiet_from), vec![]);
    }
}

// ----- no input sequence panics ------------------------------------------

#[derive(Debug, Clone)]
struct ArbConfig {
    v2: bool,
    vrid: u8,
    priority: u8,
    interval_cs: u16,
    v6: bool,
    host: u8,
    addrs: Vec<(bool, u8)>,
    peers: Vec<(bool, u8)>,
    tracks: Vec<(bool, u8, i16)>,
    preempt: bool,
    preempt_delay_ns: u64,
    accept: bool,
    start_as_master: bool,
    garp: (u32, u64, Option<u64>, u32, Option<u32>, Option<u64>),
    lower_prio_no_advert: bool,
}

fn addr(v6: bool, host: u8) -> IpAddr {
    if v6 { ip(&format!("fe80::{host:x}")) } else { ip(&format!("10.0.0.{host}")) }
}

impl ArbConfig {
    fn config(&self) -> Config {
        let version = if self.v2 { Version::V2 } else { Version::V3 };
        let primary = addr(self.v6, self.host);
        let mut c =
            Config::new(version, self.vrid, primary, self.addrs.iter().map(|(f, h)| addr(self.v6 ^ f, *h)).collect());
        c.priority = self.priority;
        c.advert_interval_cs = self.interval_cs;
        c.unicast_peers = self.peers.iter().map(|(f, h)| addr(self.v6 ^ f, *h)).collect();
        c.tracks = self
            .tracks
            .iter()
            .map(|(iface, name, weight)| Track {
                what: if *iface {
                    Tracked::Interface(format!("t{}", name % 3))
                } else {
                    Tracked::Script(format!("t{}", name % 3))
                },
                weight: *weight,
            })
            .collect();
        c.preempt = self.preempt;
        c.preempt_delay = Duration::from_nanos(self.preempt_delay_ns);
        c.accept = self.accept;
        c.start_as = if self.start_as_master { StartAs::Master } else { StartAs::Backup };
        let (master_repeat, delay, refresh, refresh_repeat, lower_repeat, lower_delay) = self.garp;
        c.garp = GarpConfig {
            master_repeat,
            master_delay: Duration::from_nanos(delay),
            master_refresh: refresh.map(Duration::from_nanos),
            master_refresh_repeat: refresh_repeat,
            lower_prio_repeat: lower_repeat,
            lower_prio_delay: lower_delay.map(Duration::from_nanos),
        };
        c.lower_prio_no_advert = self.lower_prio_no_advert;
        c
    }
}

fn arb_config() -> impl Strategy<Value = ArbConfig> {
    let small = prop_oneof![any::<u8>(), 1u8..4];
    let interval = prop_oneof![any::<u16>(), Just(100u16), Just(200), 1u16..300];
    let ns = prop_oneof![Just(0u64), 0u64..10_000_000_000, any::<u64>()];
    (
        (
            any::<bool>(),
            small.clone(),
            prop_oneof![any::<u8>(), Just(255u8), Just(100)],
            interval,
            prop::bool::weighted(0.2),
            1u8..5,
        ),
        (
            prop::collection::vec((prop::bool::weighted(0.1), 90u8..102), 0..4),
            prop::collection::vec((prop::bool::weighted(0.1), 1u8..5), 0..3),
            prop::collection::vec((any::<bool>(), any::<u8>(), prop_oneof![any::<i16>(), -100i16..100, Just(0)]), 0..4),
        ),
        (any::<bool>(), ns.clone(), any::<bool>(), any::<bool>(), any::<bool>()),
        (
            any::<u32>(),
            ns.clone(),
            prop::option::of(ns.clone()),
            any::<u32>(),
            prop::option::of(any::<u32>()),
            prop::option::of(ns),
        ),
    )
        .prop_map(
            |(
                (v2, vrid, priority, interval_cs, v6, host),
                (addrs, peers, tracks),
                (preempt, preempt_delay_ns, accept, start_as_master, lower_prio_no_advert),
                garp,
            )| ArbConfig {
                v2,
                vrid,
                priority,
                interval_cs,
                v6,
                host,
                addrs,
                peers,
                tracks,
                preempt,
                preempt_delay_ns,
                accept,
                start_as_master,
                garp,
                lower_prio_no_advert,
            },
        )
}

#[derive(Debug, Clone)]
enum Op {
    Startup(u64),
    Shutdown(u64),
    Timeout(u64),
    /// handle_timeout at poll_timeout(), this many times: jumps from deadline to deadline.
    RunTimers(u8),
    Advert {
        at: u64,
        src: (bool, u8),
        same_version: bool,
        same_vrid: bool,
        same_addrs: u8,
        priority: u8,
        interval_cs: u16,
        auth_type: u8,
    },
    Track(u64, bool, u8, bool),
    Reconfigure(u64, ArbConfig),
}

fn op() -> impl Strategy<Value = Op> {
    let at = prop_oneof![0u64..100_000, any::<u64>()];
    prop_oneof![
        1 => at.clone().prop_map(Op::Startup),
        1 => at.clone().prop_map(Op::Shutdown),
        2 => at.clone().prop_map(Op::Timeout),
        3 => any::<u8>().prop_map(|n| Op::RunTimers(n % 16)),
        8 => (
            at.clone(),
            (prop::bool::weighted(0.1), 0u8..6),
            prop::bool::weighted(0.9),
            prop::bool::weighted(0.9),
            0u8..4,
            prop_oneof![any::<u8>(), Just(0u8), Just(255), 90u8..110],
            prop_oneof![any::<u16>(), Just(100u16), 0u16..200],
            prop_oneof![Just(0u8), any::<u8>()],
        )
            .prop_map(|(at, src, same_version, same_vrid, same_addrs, priority, interval_cs, auth_type)| Op::Advert {
                at,
                src,
                same_version,
                same_vrid,
                same_addrs,
                priority,
                interval_cs,
                auth_type,
            }),
        2 => (at.clone(), any::<bool>(), any::<u8>(), any::<bool>()).prop_map(|(a, k, n, u)| Op::Track(a, k, n, u)),
        1 => (at, arb_config()).prop_map(|(a, c)| Op::Reconfigure(a, c)),
    ]
}

/// Drains the actions and checks what must hold after every call.
fn check(inst: &mut Instance) -> Result<(), TestCaseError> {
    while let Some(a) = inst.poll_action() {
        match a {
            Action::SendAdvert(adv) => {
                prop_assert!(adv.priority() == 0 || inst.state() == State::Master);
                prop_assert!(!adv.destinations.is_empty());
                // What the engine sends is always encodable.
                let mut out = Vec::new();
                for dst in &adv.destinations {
                    prop_assert!(adv.repr.emit(&mut out, adv.src, *dst).is_ok(), "{:?}", adv);
                }
            }
            Action::Announce { .. } => prop_assert_eq!(inst.state(), State::Master),
            Action::AddAddresses { .. } | Action::RemoveAddresses { .. } | Action::Notify(_) => {}
        }
    }
    let armed = |t| inst.timer(t).is_some();
    match inst.state() {
        State::Initialize | State::Fault => prop_assert_eq!(inst.poll_timeout(), None),
        State::Backup => prop_assert!(armed(Timer::MasterDown) && !armed(Timer::Advert)),
        State::Master => prop_assert!(armed(Timer::Advert) && !armed(Timer::MasterDown)),
    }
    prop_assert!(inst.effective_priority() >= 1);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Arbitrary configurations, adverts (matching or not), tracker reports,
    /// reconfigurations and times, including times that go backwards and
    /// durations that overflow an Instant: nothing panics and the timer
    /// table always matches the state.
    #[test]
    fn no_input_sequence_panics(c in arb_config(), ops in prop::collection::vec(op(), 0..60)) {
        let t0 = Instant::now();
        let when = |ms: u64| t0 + Duration::from_millis(ms % 1_000_000_000);
        let config = c.config();
        let mut inst = match Instance::new(config.clone(), t0) {
            Ok(i) => i,
            Err(_) => {
                prop_assert!(config.validate().is_err());
                Instance::new(sim::v3(1, 100), t0).unwrap()
            }
        };
        let mut last = t0;
        for op in ops {
            match op {
                Op::Startup(at) => inst.handle_startup(when(at)),
                Op::Shutdown(at) => inst.handle_shutdown(when(at)),
                Op::Timeout(at) => { last = when(at); inst.handle_timeout(last) }
                Op::RunTimers(n) => {
                    for _ in 0..n {
                        let Some(t) = inst.poll_timeout() else { break };
                        inst.handle_timeout(t);
                        prop_assert!(inst.poll_timeout() != Some(t) || inst.poll_timeout().is_none() || inst.poll_timeout() > Some(t),
                            "a fired timer was re-armed for the same instant");
                        check(&mut inst)?;
                        last = t;
                    }
                }
                Op::Advert { at, src, same_version, same_vrid, same_addrs, priority, interval_cs, auth_type } => {
                    let cfg = inst.config().clone();
                    let version = match (cfg.version, same_version) {
                        (v, true) => v,
                        (Version::V2, false) => Version::V3,
                        (Version::V3, false) => Version::V2,
                    };
                    let addresses = match same_addrs {
                        0 => cfg.addresses.clone(),
                        1 => cfg.addresses.iter().rev().copied().collect(),
                        2 => vec![],
                        _ => vec![addr(src.0, 200)],
                    };
                    let repr = VrrpRepr {
                        version,
                        vrid: if same_vrid { cfg.vrid } else { cfg.vrid.wrapping_add(1) },
                        priority,
                        interval_cs,
                        auth_type,
                        auth_data: [0; 8],
                        addresses,
                    };
                    let family_v6 = cfg.primary_ip.is_ipv6() ^ src.0;
                    let from = if src.1 == 0 { cfg.primary_ip } else { addr(family_v6, src.1) };
                    let _ = inst.handle_advert(when(at), from, &repr);
                }
                Op::Track(at, iface, name, up) => {
                    let n = format!("t{}", name % 4);
                    let what = if iface { Tracked::Interface(n) } else { Tracked::Script(n) };
                    let _ = inst.set_tracked_state(when(at), &what, up);
                }
                Op::Reconfigure(at, c) => {
                    let _ = inst.reconfigure(when(at), c.config());
                }
            }
            check(&mut inst)?;
        }
        let _ = last;
    }
}

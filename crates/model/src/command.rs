//! The writes of a region as commands, and what each does to a [`State`].
//!
//! ```text
//!  REST handler ──parse/validate──► Command ──apply(state, command, now_ms)──► Applied { puts, deletes, outcome }
//!                                                                               │
//!                       the controller writes puts + deletes in one guarded transaction
//! ```
//! [`apply`] is pure: no I/O and no clock (`now_ms`, milliseconds since the
//! Unix epoch, is an argument). It checks the command against the state it
//! would apply to, so a refused command changes nothing, and it may be
//! applied again to a newer state when another writer won (the controller
//! re-validates then). A command that finds the state already as it asks
//! writes nothing and says [`Outcome::Unchanged`].

use crate::claim::{self, Claim, Damping, Decision, Hold};
use crate::objects::*;
use crate::state::{Invalid, Object, ObjectKey, State};

/// A state-changing operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Creates a VPC.
    CreateVpc(Vpc),
    /// Changes a VPC's settings that may change after creation; `None`
    /// keeps a setting as it is.
    PatchVpc { name: String, assist: Option<bool>, arp_suppression: Option<bool> },
    /// Deletes a VPC (once it has no subnets).
    DeleteVpc(String),
    /// Creates a subnet in a VPC.
    CreateSubnet(Subnet),
    /// Deletes a subnet (once it has no ports or VIPs).
    DeleteSubnet { vpc: String, name: String },
    /// Registers a chassis or updates its registration. Its `liveness` is
    /// ignored: the recorded one is kept (the controller's to decide), and
    /// registering again with the same settings writes nothing.
    PutChassis(Chassis),
    /// Deletes a chassis (once it hosts no ports).
    DeleteChassis(String),
    /// Creates a port.
    CreatePort(Port),
    /// Deletes a port (once it is no VIP's member).
    DeletePort(String),
    /// Creates a VIP, with no owner (and its arbitration record).
    CreateVip(VipSpec),
    /// Deletes a VIP, its arbitration record and the records of its
    /// history: those its arbitration record says exist, at the state the
    /// command applies to (so a claim committed before it cannot leave one
    /// behind), and `history`, keys the caller read from the store (records
    /// written before arbitration records existed).
    DeleteVip { name: String, history: Vec<ObjectKey> },
    /// Deletes a VIP's history records older than generation `keep_from`
    /// (which must be retained; the latest always is), and records that
    /// `keep_from` was accepted at `keep_from_at` (ms). The caller reads
    /// the records' ages from the store ([`claim::HISTORY_MAX_AGE_MS`]).
    ExpireHistory { vip: String, keep_from: u64, keep_from_at: u64 },
    /// Replaces a VIP's member list; an owner that is no longer a member
    /// loses the VIP.
    PutMembers { vip: String, members: Vec<String> },
    /// Marks a member of a VIP eligible to take it, or not. An owner marked
    /// not eligible keeps the VIP; it cannot take it back once it lost it.
    SetEligible { vip: String, port: String, eligible: bool },
    /// A VRRP master reported by a chassis (`master.port` is filled in from
    /// the MAC; `assists` and `last_assist` are the recorded ones).
    ReportVrrp(VrrpRouter),
    /// Forgets a VRRP router.
    DeleteVrrp { vpc: String, id: String },
    /// Counts an assisted handover on a VRRP router.
    RecordAssist { vpc: String, id: String, record: AssistRecord },
    /// A sniffed GARP / unsolicited NA for a VIP (see [`claim::decide`],
    /// with the default hold policy [`Hold::DEFAULT`]); `actor`: who posted
    /// it (from its certificate), named in the history record.
    Claim { vip: String, claim: Claim, damping: Damping, actor: Option<String> },
    /// Registers a replicator or updates its registration.
    PutReplicator(Replicator),
    /// Deletes a replicator.
    DeleteReplicator(String),
    /// Records a chassis alive or dead (since `now_ms`), with when its last
    /// heartbeat before that decision arrived. Nothing for an unknown
    /// chassis, or one already recorded so.
    SetLiveness { chassis: String, alive: bool, last_heard_ms: u64 },
}

/// What a command did, beyond the objects it writes.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The state already is as asked: nothing to write.
    Unchanged,
    /// A new object.
    Created,
    /// An existing object changed.
    Updated,
    /// An object (and what goes with it) removed.
    Deleted,
    /// A VRRP report naming a master the router did not have (or a router
    /// not seen before).
    NewMaster,
    /// A claim gave the VIP a new owner.
    Moved { owner: Owner },
    /// A claim that would have moved the VIP, damped: it stays with
    /// `owner`, on hold until `held_until` (ms). Nothing to write.
    Damped { owner: Owner, held_until: u64 },
}

/// What applying a command writes, in one transaction: `puts` then
/// `deletes`, both empty when the outcome is [`Outcome::Unchanged`] or
/// [`Outcome::Damped`].
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub puts: Vec<Object>,
    pub deletes: Vec<ObjectKey>,
    pub outcome: Outcome,
}

impl Applied {
    fn unchanged() -> Applied {
        Applied { puts: Vec::new(), deletes: Vec::new(), outcome: Outcome::Unchanged }
    }

    fn put(obj: Object, outcome: Outcome) -> Applied {
        Applied { puts: vec![obj], deletes: Vec::new(), outcome }
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// Checks `command` against `state` at time `now_ms` and says what it writes.
/// The physical attachments served by `dead`, moved to their standby
/// gateways (those not declared dead themselves): each port swaps `chassis`
/// and `standby_chassis` (so the old one is the standby when it comes
/// back: no move back, no second outage), and a VIP the port holds follows
/// it. One gateway serves an attachment at a time: the one its port names.
fn standby_takeover(state: &State, dead: &str) -> Vec<Object> {
    let mut puts = Vec::new();
    for p in state.index().chassis_ports(dead).iter().filter_map(|n| state.ports.get(n)) {
        let Some(standby) = &p.standby_chassis else { continue };
        if p.kind != crate::PortKind::Physical || state.chassis.get(standby).is_none_or(Chassis::is_dead) {
            continue;
        }
        let moved = Port { chassis: standby.clone(), standby_chassis: Some(p.chassis.clone()), ..p.clone() };
        for v in state.vpc_vips(&p.vpc) {
            if let Some(o) = v.owner.as_ref().filter(|o| o.port == p.name && o.chassis == p.chassis) {
                let owner = Owner { chassis: standby.clone(), ..o.clone() };
                puts.push(Object::Vip(Vip { owner: Some(owner), ..v.clone() }));
            }
        }
        puts.push(Object::Port(moved));
    }
    puts
}

pub fn apply(state: &State, command: &Command, now_ms: u64) -> Result<Applied, Invalid> {
    match command {
        Command::CreateVpc(v) => {
            state.check_vpc(v)?;
            Ok(Applied::put(Object::Vpc(v.clone()), Outcome::Created))
        }
        Command::PatchVpc { name, assist, arp_suppression } => {
            let old = state.vpcs.get(name).ok_or_else(|| Invalid::not_found("VPC", name))?;
            let new = Vpc {
                assist: assist.unwrap_or(old.assist),
                arp_suppression: arp_suppression.unwrap_or(old.arp_suppression),
                ..old.clone()
            };
            Ok(if &new == old { Applied::unchanged() } else { Applied::put(Object::Vpc(new), Outcome::Updated) })
        }
        Command::CreateSubnet(s) => {
            state.check_subnet(s)?;
            Ok(Applied::put(Object::Subnet(s.clone()), Outcome::Created))
        }
        Command::PutChassis(ch) => {
            let old = state.chassis.get(&ch.name);
            // Liveness is the controller's to decide: registering keeps it.
            let ch = Chassis { liveness: old.and_then(|o| o.liveness), ..ch.clone() };
            state.check_chassis(&ch)?;
            Ok(match old {
                // Registering again with the same settings writes nothing.
                Some(o) if *o == ch => Applied::unchanged(),
                Some(_) => Applied::put(Object::Chassis(ch), Outcome::Updated),
                None => Applied::put(Object::Chassis(ch), Outcome::Created),
            })
        }
        Command::CreatePort(p) => {
            state.check_port(p)?;
            Ok(Applied::put(Object::Port(p.clone()), Outcome::Created))
        }
        Command::CreateVip(spec) => {
            state.check_vip(spec)?;
            let vip = Vip::new(spec.clone());
            let arbitration = Object::Arbitration(Arbitration::new(&vip));
            Ok(Applied { puts: vec![Object::Vip(vip), arbitration], deletes: Vec::new(), outcome: Outcome::Created })
        }
        Command::PutMembers { vip: name, members } => {
            let vip = state.vips.get(name).ok_or_else(|| Invalid::not_found("VIP", name))?;
            let mut next = vip.clone();
            next.spec.members = members.clone();
            state.check_members(&next.spec)?;
            next.ineligible.retain(|p| next.spec.members.contains(p));
            // An owner that is no longer a member no longer owns the VIP.
            let mut puts = Vec::new();
            if next.owner.as_ref().is_some_and(|o| !next.spec.members.contains(&o.port)) {
                next.owner = None;
                // Its generation lives on in the arbitration record (the next
                // owner's is one more; no history record is written over).
                if !state.arbitration.contains_key(name) {
                    puts.push(Object::Arbitration(Arbitration::new(vip)));
                }
            }
            if &next == vip {
                return Ok(Applied::unchanged());
            }
            puts.insert(0, Object::Vip(next));
            Ok(Applied { puts, deletes: Vec::new(), outcome: Outcome::Updated })
        }
        Command::SetEligible { vip: name, port, eligible } => {
            let vip = state.vips.get(name).ok_or_else(|| Invalid::not_found("VIP", name))?;
            if !vip.spec.members.contains(port) {
                return Err(Invalid::bad(
                    "not_member",
                    "port",
                    format!("port {port:?} is not a member of VIP {name:?}"),
                ));
            }
            if vip.eligible(port) == *eligible {
                return Ok(Applied::unchanged());
            }
            let mut next = vip.clone();
            if *eligible {
                next.ineligible.retain(|p| p != port);
            } else {
                next.ineligible.push(port.clone());
                next.ineligible.sort();
            }
            Ok(Applied::put(Object::Vip(next), Outcome::Updated))
        }
        Command::ReportVrrp(report) => {
            let mut r = report.clone();
            state.check_router(&mut r)?;
            let old = state.routers.get(&(r.vpc.clone(), r.id.clone()));
            if let Some(old) = old {
                // Counted by the controller, not reported.
                r.assists = old.assists;
                r.last_assist = old.last_assist.clone();
                // The same master advertising the same: only when it was seen differs.
                if (VrrpRouter { observed_at: old.observed_at, ..r.clone() }) == *old {
                    return Ok(Applied::unchanged());
                }
            }
            let outcome = if old.is_none_or(|o| o.master != r.master) { Outcome::NewMaster } else { Outcome::Updated };
            Ok(Applied::put(Object::Router(r), outcome))
        }
        Command::RecordAssist { vpc, id, record } => {
            let key = (vpc.clone(), id.clone());
            let r = state.routers.get(&key).ok_or_else(|| Invalid::not_found("VRRP router", &format!("{vpc}/{id}")))?;
            let r = VrrpRouter { assists: r.assists + 1, last_assist: Some(record.clone()), ..r.clone() };
            Ok(Applied::put(Object::Router(r), Outcome::Updated))
        }
        Command::Claim { vip, claim, damping, actor } => {
            Ok(claim::decide(state, vip, claim, now_ms, damping, &Hold::DEFAULT)?
                .attributed(actor.as_deref())
                .applied())
        }
        Command::ExpireHistory { vip, keep_from, keep_from_at } => {
            let a = state.arbitration.get(vip).ok_or_else(|| Invalid::not_found("arbitration record of", vip))?;
            let span = a.history;
            if !span.contains(*keep_from) {
                return Err(Invalid::bad(
                    "not_retained",
                    "keep_from",
                    format!("generation {keep_from} of VIP {vip:?} is not retained ({}..={})", span.first, span.last),
                ));
            }
            if *keep_from == span.first && *keep_from_at == span.first_at {
                return Ok(Applied::unchanged());
            }
            let deletes = (span.first..*keep_from).map(|g| ObjectKey::History(vip.clone(), g)).collect();
            let history = HistorySpan { first: *keep_from, first_at: *keep_from_at, ..span };
            let puts = vec![Object::Arbitration(Arbitration { history, ..a.clone() })];
            Ok(Applied { puts, deletes, outcome: Outcome::Updated })
        }
        Command::PutReplicator(r) => {
            state.check_replicator(r)?;
            Ok(match state.replicators.get(&r.name) {
                Some(o) if o == r => Applied::unchanged(),
                Some(_) => Applied::put(Object::Replicator(r.clone()), Outcome::Updated),
                None => Applied::put(Object::Replicator(r.clone()), Outcome::Created),
            })
        }
        Command::SetLiveness { chassis, alive, last_heard_ms } => {
            let Some(ch) = state.chassis.get(chassis) else { return Ok(Applied::unchanged()) };
            if ch.liveness.map(|l| l.alive) == Some(*alive) {
                return Ok(Applied::unchanged());
            }
            let liveness = Liveness { alive: *alive, since_ms: now_ms, last_heard_ms: *last_heard_ms };
            let mut applied =
                Applied::put(Object::Chassis(Chassis { liveness: Some(liveness), ..ch.clone() }), Outcome::Updated);
            if !*alive {
                applied.puts.extend(standby_takeover(state, chassis));
            }
            Ok(applied)
        }
        Command::DeleteVip { name, history } => {
            let key = ObjectKey::Vip(name.clone());
            state.check_delete(&key)?;
            // The history goes with the VIP (a new VIP of the same name starts
            // over): every record the state says exists, and those listed.
            let span = match (state.arbitration.get(name), state.vips.get(name)) {
                (Some(a), _) => a.history,
                (None, Some(v)) => Arbitration::new(v).history,
                (None, None) => HistorySpan::default(),
            };
            let mut records: std::collections::BTreeSet<ObjectKey> = history.iter().cloned().collect();
            if span.last != 0 {
                records.extend((span.first..=span.last).map(|g| ObjectKey::History(name.clone(), g)));
            }
            let mut deletes = vec![key];
            if state.arbitration.contains_key(name) {
                deletes.push(ObjectKey::Arbitration(name.clone()));
            }
            deletes.extend(records);
            Ok(Applied { puts: Vec::new(), deletes, outcome: Outcome::Deleted })
        }
        Command::DeleteVpc(n) => delete(state, ObjectKey::Vpc(n.clone())),
        Command::DeleteSubnet { vpc, name } => delete(state, ObjectKey::Subnet(vpc.clone(), name.clone())),
        Command::DeleteChassis(n) => delete(state, ObjectKey::Chassis(n.clone())),
        Command::DeletePort(n) => delete(state, ObjectKey::Port(n.clone())),
        Command::DeleteVrrp { vpc, id } => delete(state, ObjectKey::Router(vpc.clone(), id.clone())),
        Command::DeleteReplicator(n) => delete(state, ObjectKey::Replicator(n.clone())),
    }
}

impl Decision {
    /// The decision with its history record naming `actor` (who posted the claim).
    pub fn attributed(mut self, actor: Option<&str>) -> Decision {
        if let Decision::Moved(m) = &mut self {
            m.change.actor = actor.map(str::to_string);
        }
        self
    }

    /// What the decision writes, and its outcome.
    pub fn applied(&self) -> Applied {
        match self {
            Decision::Unchanged => Applied::unchanged(),
            Decision::Damped { owner, held_until } => Applied {
                puts: Vec::new(),
                deletes: Vec::new(),
                outcome: Outcome::Damped { owner: owner.clone(), held_until: *held_until },
            },
            Decision::Moved(m) => {
                let mut puts = vec![Object::Vip(m.vip.clone()), Object::History(m.change.clone())];
                puts.extend(m.arbitration.clone().map(Object::Arbitration));
                Applied { puts, deletes: m.expired.clone(), outcome: Outcome::Moved { owner: m.change.owner.clone() } }
            }
        }
    }
}

/// Deletes `key`, once it exists and nothing refers to it.
fn delete(state: &State, key: ObjectKey) -> Result<Applied, Invalid> {
    state.check_delete(&key)?;
    Ok(Applied { puts: Vec::new(), deletes: vec![key], outcome: Outcome::Deleted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::InvalidKind;

    fn sample() -> State {
        crate::state::tests::sample()
    }

    /// Applies `command` to `s` as the store would (puts, then deletes).
    fn run(s: &mut State, command: &Command, now_ms: u64) -> Result<Outcome, Invalid> {
        let a = apply(s, command, now_ms)?;
        assert_eq!(a.is_empty(), a.outcome == Outcome::Unchanged, "{a:?}");
        for obj in a.puts {
            s.put(obj);
        }
        for key in &a.deletes {
            s.delete(key);
        }
        Ok(a.outcome)
    }

    fn chassis(name: &str, ip: &str) -> Chassis {
        Chassis {
            name: name.into(),
            underlay_ip: ip.parse().unwrap(),
            role: Role::Hypervisor,
            dataplane: Dataplane::Kernel,
            liveness: None,
        }
    }

    /// `sample()` with gateways gw1, gw2 (kernel) and gw3 (Open vSwitch),
    /// an IPv6 subnet, and physical port metal1 on gw1 (standby gw2)
    /// holding pay-vip.
    fn with_metal() -> State {
        let mut s = sample();
        for (i, (name, dataplane)) in
            [("gw1", Dataplane::Kernel), ("gw2", Dataplane::Kernel), ("gw3", Dataplane::Ovs)].into_iter().enumerate()
        {
            let ip = format!("172.31.0.{}", 10 + i);
            s.put(Object::Chassis(Chassis { role: Role::Gateway, dataplane, ..chassis(name, &ip) }));
        }
        s.put(Object::Subnet(Subnet {
            vpc: "prod".into(),
            name: "web6".into(),
            cidr: "fd00:10::/64".parse().unwrap(),
            gateway: Some("fd00:10::1".parse().unwrap()),
        }));
        let metal = metal("metal1", "gw1", "eth1");
        assert_eq!(run(&mut s, &Command::CreatePort(metal), 1), Ok(Outcome::Created));
        let mut vip = s.vips["pay-vip"].clone();
        vip.spec.members.push("metal1".into());
        vip.owner = Some(Owner {
            port: "metal1".into(),
            mac: s.ports["metal1"].mac,
            chassis: "gw1".into(),
            generation: 1,
            since: 1,
        });
        s.put(Object::Vip(vip));
        s
    }

    fn metal(name: &str, chassis: &str, interface: &str) -> Port {
        Port {
            kind: crate::PortKind::Physical,
            interface: Some(interface.into()),
            standby_chassis: Some("gw2".into()),
            ..Port::vm(
                name,
                "prod",
                "web",
                chassis,
                "02:00:00:00:0e:01".parse().unwrap(),
                "192.168.10.21".parse().unwrap(),
            )
        }
    }

    #[test]
    fn physical_and_dual_stack_ports_are_checked() {
        let s = with_metal();
        let refused = |p: Port| {
            let e = apply(&s, &Command::CreatePort(p), 1).unwrap_err();
            (e.code, e.field)
        };
        let other = |f: &dyn Fn(&mut Port)| {
            let mut p = metal("metal2", "gw1", "eth2");
            p.mac = "02:00:00:00:0e:02".parse().unwrap();
            p.ip = "192.168.10.22".parse().unwrap();
            f(&mut p);
            p
        };
        assert!(apply(&s, &Command::CreatePort(other(&|_| {})), 1).is_ok());
        assert_eq!(refused(other(&|p| p.chassis = "hv1".into())), ("not_a_kernel_gateway", Some("chassis")));
        assert_eq!(refused(other(&|p| p.chassis = "gw3".into())), ("not_a_kernel_gateway", Some("chassis")));
        assert_eq!(
            refused(other(&|p| p.standby_chassis = Some("gw3".into()))),
            ("not_a_kernel_gateway", Some("standby_chassis"))
        );
        assert_eq!(
            refused(other(&|p| p.standby_chassis = Some("gw1".into()))),
            ("standby_is_chassis", Some("standby_chassis"))
        );
        assert_eq!(refused(other(&|p| p.interface = None)), ("missing_interface", Some("interface")));
        assert_eq!(refused(other(&|p| p.interface = Some("a/b".into()))), ("invalid_interface", Some("interface")));
        assert_eq!(
            refused(other(&|p| p.interface = Some("sixteen-bytes-xx".into()))),
            ("invalid_interface", Some("interface"))
        );
        assert_eq!(refused(other(&|p| p.vlan = Some(4095))), ("invalid_vlan", Some("vlan")));
        assert_eq!(
            refused(other(&|p| {
                p.interface = Some("enp129s0f1np1".into());
                p.vlan = Some(4094)
            })),
            ("invalid_interface", Some("interface"))
        );
        // metal1's device on gw1 (and on its standby, gw2) is taken.
        assert_eq!(refused(other(&|p| p.interface = Some("eth1".into()))), ("attachment_in_use", Some("interface")));
        assert_eq!(
            refused(other(&|p| {
                p.interface = Some("eth1".into());
                p.chassis = "gw2".into();
                p.standby_chassis = None
            })),
            ("attachment_in_use", Some("interface"))
        );
        assert!(apply(&s, &Command::CreatePort(other(&|p| p.vlan = Some(30))), 1).is_ok());
        let vm = |f: &dyn Fn(&mut Port)| {
            let mut p = Port::vm(
                "vm9",
                "prod",
                "web",
                "hv1",
                "02:00:00:00:09:01".parse().unwrap(),
                "192.168.10.90".parse().unwrap(),
            );
            f(&mut p);
            p
        };
        assert_eq!(refused(vm(&|p| p.vlan = Some(3))), ("not_physical", Some("vlan")));
        assert_eq!(refused(vm(&|p| p.interface = Some("eth1".into()))), ("not_physical", Some("interface")));
        // Dual stack.
        let six = |ip6: &str, subnet6: &str| {
            vm(&|p| {
                p.ip6 = Some(ip6.parse().unwrap());
                p.subnet6 = Some(subnet6.into())
            })
        };
        assert!(apply(&s, &Command::CreatePort(six("fd00:10::90", "web6")), 1).is_ok());
        assert_eq!(refused(six("fd00:10::90", "nope")), ("unknown_subnet", Some("subnet6")));
        assert_eq!(refused(six("fd00:99::90", "web6")), ("ip_outside_subnet", Some("ip6")));
        assert_eq!(refused(six("fd00:10::1", "web6")), ("duplicate_ip", Some("ip6")));
        assert_eq!(refused(six("fd00:10::90", "web")), ("ip_outside_subnet", Some("ip6")));
        assert_eq!(refused(vm(&|p| p.subnet6 = Some("web6".into()))), ("missing_ip6", Some("ip6")));
        let mut s2 = s.clone();
        assert_eq!(run(&mut s2, &Command::CreatePort(six("fd00:10::90", "web6")), 1), Ok(Outcome::Created));
        let mut dup = six("fd00:10::90", "web6");
        dup.name = "vm8".into();
        dup.mac = "02:00:00:00:08:01".parse().unwrap();
        dup.ip = "192.168.10.80".parse().unwrap();
        assert_eq!(
            apply(&s2, &Command::CreatePort(dup), 1).map_err(|e| (e.code, e.field)).unwrap_err(),
            ("duplicate_ip", Some("ip6"))
        );
        // The IPv6 subnet cannot go while a port has an address in it.
        assert_eq!(
            apply(&s2, &Command::DeleteSubnet { vpc: "prod".into(), name: "web6".into() }, 1).unwrap_err().code,
            "in_use"
        );
        // Nor the standby gateway.
        assert_eq!(apply(&s, &Command::DeleteChassis("gw2".into()), 1).unwrap_err().code, "in_use");
    }

    #[test]
    fn a_dead_gateway_hands_its_attachments_to_their_standby() {
        let mut s = with_metal();
        let dead = |c: &str| Command::SetLiveness { chassis: c.into(), alive: false, last_heard_ms: 5 };
        let alive = |c: &str| Command::SetLiveness { chassis: c.into(), alive: true, last_heard_ms: 9 };
        assert_eq!(run(&mut s, &dead("gw1"), 10), Ok(Outcome::Updated));
        let p = &s.ports["metal1"];
        assert_eq!((p.chassis.as_str(), p.standby_chassis.as_deref()), ("gw2", Some("gw1")));
        assert_eq!(s.index().chassis_ports("gw2").iter().collect::<Vec<_>>(), ["metal1"]);
        // The VIP it holds follows it, same owner, same generation.
        let o = s.vips["pay-vip"].owner.clone().unwrap();
        assert_eq!((o.port.as_str(), o.chassis.as_str(), o.generation), ("metal1", "gw2", 1));
        // Back alive: no move back.
        assert_eq!(run(&mut s, &alive("gw1"), 20), Ok(Outcome::Updated));
        assert_eq!(s.ports["metal1"].chassis, "gw2");
        // The standby dies while the first is dead: nowhere to go, it stays.
        assert_eq!(run(&mut s, &dead("gw1"), 30), Ok(Outcome::Updated));
        assert_eq!(run(&mut s, &dead("gw2"), 31), Ok(Outcome::Updated));
        assert_eq!(s.ports["metal1"].chassis, "gw2");
        // A VM port never moves.
        assert_eq!(run(&mut s, &dead("hv1"), 40), Ok(Outcome::Updated));
        assert_eq!(s.ports["pay1"].chassis, "hv1");
    }

    fn claim(mac: &str, chassis: &str) -> Command {
        Command::Claim {
            vip: "pay-vip".into(),
            claim: Claim {
                mac: mac.parse().unwrap(),
                chassis: chassis.into(),
                source: ClaimSource::Agent,
                observed_at: 1,
            },
            damping: Damping::default(),
            actor: Some("agent:hv1".into()),
        }
    }

    fn report(chassis: &str, mac: &str, ip: &str, priority: u8, observed_at: u64) -> Command {
        Command::ReportVrrp(VrrpRouter {
            vpc: "prod".into(),
            id: "51-ipv4".into(),
            vrid: 51,
            version: 3,
            master: VrrpMaster {
                ip: ip.parse().unwrap(),
                mac: mac.parse().unwrap(),
                port: String::new(),
                chassis: chassis.into(),
            },
            priority,
            interval_cs: 10,
            addresses: vec!["192.168.10.100".parse().unwrap()],
            destinations: vec!["224.0.0.18".parse().unwrap()],
            auth_type: 0,
            observed_at,
            assists: 0,
            last_assist: None,
        })
    }

    fn assist(id: &str, at_ms: u64) -> Command {
        Command::RecordAssist {
            vpc: "prod".into(),
            id: id.into(),
            record: AssistRecord {
                fault: AssistFault::ChassisDead,
                by: "hv2".into(),
                master: "192.168.10.11".parse().unwrap(),
                at_ms,
            },
        }
    }

    #[test]
    fn creations_are_checked_and_write_the_object() {
        let mut s = sample();
        let vpc = Vpc {
            name: "dev".into(),
            vni: 200,
            bum: BumMode::Headend,
            arp_suppression: false,
            assist: true,
            encap: Encap::Vxlan,
        };
        let a = apply(&s, &Command::CreateVpc(vpc.clone()), 0).unwrap();
        assert_eq!((a.puts, a.deletes, a.outcome), (vec![Object::Vpc(vpc.clone())], vec![], Outcome::Created));
        assert_eq!(run(&mut s, &Command::CreateVpc(vpc.clone()), 0), Ok(Outcome::Created));
        // A refused command writes nothing: the same again clashes.
        let e = apply(&s, &Command::CreateVpc(vpc), 0).unwrap_err();
        assert_eq!((e.kind, e.code), (InvalidKind::Conflict, "exists"));
        let spec = VipSpec {
            name: "v2".into(),
            vpc: "prod".into(),
            subnet: "web".into(),
            ip: "192.168.10.101".parse().unwrap(),
            members: vec!["pay1".into()],
        };
        assert_eq!(run(&mut s, &Command::CreateVip(spec.clone()), 0), Ok(Outcome::Created));
        assert_eq!(s.vips["v2"], Vip::new(spec), "a new VIP has no owner");
    }

    #[test]
    fn a_vpc_patch_changes_only_its_settings() {
        let mut s = sample();
        let patch = |assist, arp_suppression| Command::PatchVpc { name: "prod".into(), assist, arp_suppression };
        assert_eq!(run(&mut s, &patch(Some(false), None), 0), Ok(Outcome::Updated));
        let v = &s.vpcs["prod"];
        assert_eq!((v.assist, v.arp_suppression, v.vni), (false, true, 100));
        assert_eq!(run(&mut s, &patch(Some(false), Some(true)), 0), Ok(Outcome::Unchanged));
        assert_eq!(run(&mut s, &patch(None, None), 0), Ok(Outcome::Unchanged));
        let nope = Command::PatchVpc { name: "nope".into(), assist: None, arp_suppression: None };
        assert_eq!(apply(&s, &nope, 0).unwrap_err().kind, InvalidKind::NotFound);
    }

    #[test]
    fn put_chassis_keeps_liveness_and_is_idempotent() {
        let mut s = sample();
        assert_eq!(run(&mut s, &Command::PutChassis(chassis("hv9", "172.31.0.9")), 0), Ok(Outcome::Created));
        assert_eq!(run(&mut s, &Command::PutChassis(chassis("hv9", "172.31.0.9")), 0), Ok(Outcome::Unchanged));
        let alive = Command::SetLiveness { chassis: "hv9".into(), alive: true, last_heard_ms: 40 };
        assert_eq!(run(&mut s, &alive, 50), Ok(Outcome::Updated));
        let recorded = Some(Liveness { alive: true, since_ms: 50, last_heard_ms: 40 });
        assert_eq!(s.chassis["hv9"].liveness, recorded);
        // Registering again, even claiming a liveness, keeps the recorded one and writes nothing.
        let mut claimed = chassis("hv9", "172.31.0.9");
        claimed.liveness = Some(Liveness { alive: false, since_ms: 1, last_heard_ms: 1 });
        assert_eq!(run(&mut s, &Command::PutChassis(claimed), 60), Ok(Outcome::Unchanged));
        // A changed registration is written, still with the recorded liveness.
        let a = apply(&s, &Command::PutChassis(chassis("hv9", "172.31.0.99")), 70).unwrap();
        assert_eq!(a.outcome, Outcome::Updated);
        let [Object::Chassis(ch)] = a.puts.as_slice() else { panic!("{a:?}") };
        assert_eq!((ch.underlay_ip.to_string().as_str(), ch.liveness), ("172.31.0.99", recorded));
        // Validation is the registration's: another chassis' underlay address clashes.
        let e = apply(&s, &Command::PutChassis(chassis("hv9", "172.31.0.1")), 0).unwrap_err();
        assert_eq!(e.code, "duplicate_underlay_ip");
    }

    #[test]
    fn liveness_is_written_only_when_it_changes() {
        let mut s = sample();
        let set = |alive, last_heard_ms| Command::SetLiveness { chassis: "hv1".into(), alive, last_heard_ms };
        assert_eq!(run(&mut s, &set(false, 5), 10), Ok(Outcome::Updated));
        assert_eq!(s.chassis["hv1"].liveness, Some(Liveness { alive: false, since_ms: 10, last_heard_ms: 5 }));
        assert!(s.chassis["hv1"].is_dead());
        assert_eq!(run(&mut s, &set(false, 7), 20), Ok(Outcome::Unchanged));
        assert_eq!(run(&mut s, &set(true, 7), 30), Ok(Outcome::Updated));
        assert_eq!(s.chassis["hv1"].liveness, Some(Liveness { alive: true, since_ms: 30, last_heard_ms: 7 }));
        let ghost = Command::SetLiveness { chassis: "ghost".into(), alive: false, last_heard_ms: 0 };
        assert_eq!(run(&mut s, &ghost, 40), Ok(Outcome::Unchanged));
    }

    #[test]
    fn an_ineligible_member_cannot_take_the_vip() {
        let mut s = sample();
        let set =
            |port: &str, eligible: bool| Command::SetEligible { vip: "pay-vip".into(), port: port.into(), eligible };
        assert_eq!(run(&mut s, &set("pay2", false), 0), Ok(Outcome::Updated));
        assert_eq!(run(&mut s, &set("pay2", false), 0), Ok(Outcome::Unchanged));
        assert_eq!(s.vips["pay-vip"].ineligible, ["pay2"]);
        assert_eq!(run(&mut s, &set("client", false), 0).unwrap_err().code, "not_member");
        assert_eq!(
            run(&mut s, &Command::SetEligible { vip: "nope".into(), port: "pay2".into(), eligible: true }, 0)
                .unwrap_err()
                .code,
            "not_found"
        );
        // pay1 takes the VIP; pay2 (on hv2) may not, however often it claims.
        assert!(matches!(run(&mut s, &claim("02:00:00:00:00:01", "hv1"), 100), Ok(Outcome::Moved { .. })));
        let e = run(&mut s, &claim("02:00:00:00:00:02", "hv2"), 200).unwrap_err();
        assert_eq!(e.code, "not_eligible");
        assert_eq!(s.vips["pay-vip"].owner.as_ref().map(|o| o.port.as_str()), Some("pay1"));
        // Eligible again: it may.
        assert_eq!(run(&mut s, &set("pay2", true), 0), Ok(Outcome::Updated));
        assert!(s.vips["pay-vip"].ineligible.is_empty());
        assert!(matches!(run(&mut s, &claim("02:00:00:00:00:02", "hv2"), 300), Ok(Outcome::Moved { .. })));
        // A member that leaves the list leaves the ineligible list too.
        assert_eq!(run(&mut s, &set("pay2", false), 0), Ok(Outcome::Updated));
        let members = Command::PutMembers { vip: "pay-vip".into(), members: vec!["pay1".into()] };
        assert_eq!(run(&mut s, &members, 0), Ok(Outcome::Updated));
        assert!(s.vips["pay-vip"].ineligible.is_empty());
    }

    #[test]
    fn put_members_drops_an_owner_that_is_no_longer_a_member() {
        let mut s = sample();
        let members = |m: &[&str]| Command::PutMembers {
            vip: "pay-vip".into(),
            members: m.iter().map(|m| m.to_string()).collect(),
        };
        assert!(matches!(run(&mut s, &claim("02:00:00:00:00:01", "hv1"), 100), Ok(Outcome::Moved { .. })));
        // The owner stays a member: it keeps the VIP.
        let client = Port {
            name: "pay3".into(),
            mac: "02:00:00:00:00:09".parse().unwrap(),
            ip: "192.168.10.19".parse().unwrap(),
            ..s.ports["client"].clone()
        };
        s.put(Object::Port(client));
        assert_eq!(run(&mut s, &members(&["pay1", "pay2", "pay3"]), 0), Ok(Outcome::Updated));
        assert_eq!(s.vips["pay-vip"].owner.as_ref().map(|o| o.port.as_str()), Some("pay1"));
        assert_eq!(run(&mut s, &members(&["pay1", "pay2", "pay3"]), 0), Ok(Outcome::Unchanged));
        // It is no longer a member: nobody owns the VIP until the next claim.
        assert_eq!(run(&mut s, &members(&["pay2", "pay3"]), 0), Ok(Outcome::Updated));
        assert_eq!(s.vips["pay-vip"].owner, None);
        assert_eq!(s.vips["pay-vip"].spec.members, ["pay2", "pay3"]);
        for (m, code) in
            [(&[][..], "no_members"), (&["ghost"][..], "unknown_port"), (&["pay2", "pay2"][..], "duplicate_member")]
        {
            assert_eq!(apply(&s, &members(m), 0).unwrap_err().code, code);
        }
        let e = apply(&s, &Command::PutMembers { vip: "nope".into(), members: vec!["pay1".into()] }, 0).unwrap_err();
        assert_eq!(e.kind, InvalidKind::NotFound);
    }

    #[test]
    fn claims_move_the_vip_once_and_write_its_history() {
        let mut s = sample();
        let a = apply(&s, &claim("02:00:00:00:00:01", "hv1"), 1000).unwrap();
        let Outcome::Moved { owner } = &a.outcome else { panic!("{a:?}") };
        assert_eq!((owner.port.as_str(), owner.generation, owner.since), ("pay1", 1, 1000));
        let [Object::Vip(vip), Object::History(change)] = a.puts.as_slice() else { panic!("{a:?}") };
        assert_eq!((vip.owner.as_ref(), &change.owner, change.accepted_at), (Some(owner), owner, 1000));
        assert_eq!(change.actor.as_deref(), Some("agent:hv1"), "the history names who claimed");
        assert!(a.deletes.is_empty());
        for obj in a.puts {
            s.put(obj);
        }
        // The owner claiming again: nothing to write.
        assert_eq!(run(&mut s, &claim("02:00:00:00:00:01", "hv1"), 1001), Ok(Outcome::Unchanged));
        let moved = run(&mut s, &claim("02:00:00:00:00:02", "hv2"), 2000).unwrap();
        assert!(
            matches!(&moved, Outcome::Moved { owner } if owner.port == "pay2" && owner.generation == 2),
            "{moved:?}"
        );
        // Spoofing is refused.
        let e = apply(&s, &claim("02:00:00:00:00:03", "hv3"), 3000).unwrap_err();
        assert_eq!((e.kind, e.code), (InvalidKind::Forbidden, "not_member"));
    }

    #[test]
    fn vrrp_reports_merge_into_the_view() {
        let mut s = sample();
        // First report: a new master, its port found from the MAC on that chassis.
        assert_eq!(
            run(&mut s, &report("hv1", "02:00:00:00:00:01", "192.168.10.11", 150, 1), 0),
            Ok(Outcome::NewMaster)
        );
        let key = ("prod".to_string(), "51-ipv4".to_string());
        assert_eq!(s.routers[&key].master.port, "pay1");
        // Only `observed_at` differs: nothing to write.
        let a = apply(&s, &report("hv1", "02:00:00:00:00:01", "192.168.10.11", 150, 99), 0).unwrap();
        assert_eq!(a, Applied::unchanged());
        // The same master advertising something else: written, not a new master.
        assert_eq!(run(&mut s, &report("hv1", "02:00:00:00:00:01", "192.168.10.11", 120, 2), 0), Ok(Outcome::Updated));
        assert_eq!((s.routers[&key].priority, s.routers[&key].observed_at), (120, 2));
        // Assists are counted on the router and kept across reports.
        assert_eq!(run(&mut s, &assist("51-ipv4", 5), 0), Ok(Outcome::Updated));
        assert_eq!(run(&mut s, &assist("51-ipv4", 6), 0), Ok(Outcome::Updated));
        assert_eq!(s.routers[&key].assists, 2);
        assert_eq!(
            run(&mut s, &report("hv1", "02:00:00:00:00:01", "192.168.10.11", 120, 3), 0),
            Ok(Outcome::Unchanged)
        );
        assert_eq!(
            run(&mut s, &report("hv2", "02:00:00:00:00:02", "192.168.10.12", 100, 4), 0),
            Ok(Outcome::NewMaster)
        );
        let r = &s.routers[&key];
        assert_eq!((r.master.port.as_str(), r.assists, r.last_assist.as_ref().map(|a| a.at_ms)), ("pay2", 2, Some(6)));
        // A chassis speaking for a port it does not host is refused.
        let e = apply(&s, &report("hv2", "02:00:00:00:00:01", "192.168.10.11", 100, 5), 0).unwrap_err();
        assert_eq!((e.kind, e.code), (InvalidKind::Forbidden, "not_a_local_port"));
        // An assist for a router never reported.
        assert_eq!(apply(&s, &assist("9-ipv4", 7), 0).unwrap_err().kind, InvalidKind::NotFound);
        assert_eq!(
            run(&mut s, &Command::DeleteVrrp { vpc: "prod".into(), id: "51-ipv4".into() }, 0),
            Ok(Outcome::Deleted)
        );
        assert!(s.routers.is_empty());
    }

    #[test]
    fn replicator_registration_is_idempotent() {
        let mut s = sample();
        let r = |name: &str, address: &str| Replicator { name: name.into(), address: address.parse().unwrap() };
        assert_eq!(run(&mut s, &Command::PutReplicator(r("r1", "172.31.1.1:4789")), 0), Ok(Outcome::Created));
        assert_eq!(run(&mut s, &Command::PutReplicator(r("r1", "172.31.1.1:4789")), 0), Ok(Outcome::Unchanged));
        assert_eq!(run(&mut s, &Command::PutReplicator(r("r1", "172.31.1.2:4789")), 0), Ok(Outcome::Updated));
        let e = apply(&s, &Command::PutReplicator(r("r2", "172.31.1.2:4789")), 0).unwrap_err();
        assert_eq!(e.code, "duplicate_address");
        assert_eq!(run(&mut s, &Command::DeleteReplicator("r1".into()), 0), Ok(Outcome::Deleted));
        assert_eq!(apply(&s, &Command::DeleteReplicator("r1".into()), 0).unwrap_err().kind, InvalidKind::NotFound);
    }

    #[test]
    fn deletions_are_refused_while_in_use_and_a_vip_takes_its_history() {
        let mut s = sample();
        for (command, code) in [
            (Command::DeleteVpc("prod".into()), "in_use"),
            (Command::DeleteSubnet { vpc: "prod".into(), name: "web".into() }, "in_use"),
            (Command::DeleteChassis("hv1".into()), "in_use"),
            (Command::DeletePort("pay1".into()), "in_use"),
            (Command::DeletePort("ghost".into()), "not_found"),
        ] {
            assert_eq!(apply(&s, &command, 0).unwrap_err().code, code, "{command:?}");
        }
        let history = vec![ObjectKey::History("pay-vip".into(), 1), ObjectKey::History("pay-vip".into(), 2)];
        let a = apply(&s, &Command::DeleteVip { name: "pay-vip".into(), history: history.clone() }, 0).unwrap();
        let mut expected = vec![ObjectKey::Vip("pay-vip".into())];
        expected.extend(history);
        assert_eq!((a.puts, a.deletes, a.outcome), (vec![], expected, Outcome::Deleted));
        assert_eq!(
            run(&mut s, &Command::DeleteVip { name: "pay-vip".into(), history: vec![] }, 0),
            Ok(Outcome::Deleted)
        );
        // Now nothing refers to the ports, then the chassis, subnet and VPC.
        for command in [
            Command::DeletePort("pay1".into()),
            Command::DeletePort("pay2".into()),
            Command::DeletePort("client".into()),
            Command::DeleteChassis("hv1".into()),
            Command::DeleteSubnet { vpc: "prod".into(), name: "web".into() },
            Command::DeleteVpc("prod".into()),
        ] {
            assert_eq!(run(&mut s, &command, 0), Ok(Outcome::Deleted), "{command:?}");
        }
        assert!(s.vpcs.is_empty() && s.ports.is_empty() && s.subnets.is_empty());
    }

    /// The sample state as the controller makes it: the VIP created by its command.
    fn created() -> State {
        let mut s = sample();
        let spec = s.vips["pay-vip"].spec.clone();
        s.delete(&ObjectKey::Vip("pay-vip".into()));
        assert_eq!(run(&mut s, &Command::CreateVip(spec), 0), Ok(Outcome::Created));
        assert!(s.arbitration.contains_key("pay-vip"));
        s
    }

    fn claim_at(mac: &str, chassis: &str, now: u64) -> Command {
        let Command::Claim { vip, mut claim, damping, actor } = claim(mac, chassis) else { unreachable!() };
        claim.observed_at = now;
        Command::Claim { vip, claim, damping, actor }
    }

    #[test]
    fn a_deleted_vip_takes_every_history_record_the_state_knows_of() {
        let mut s = created();
        let mut now = 1_000;
        for (mac, ch) in [("02:00:00:00:00:01", "hv1"), ("02:00:00:00:00:02", "hv2"), ("02:00:00:00:00:01", "hv1")] {
            now += 10;
            assert!(matches!(run(&mut s, &claim_at(mac, ch, now), now), Ok(Outcome::Moved { .. })));
        }
        // The caller read only generation 1 from the store (claims were still
        // arriving): the state knows of 1..=3, and the command deletes them all.
        let read = vec![ObjectKey::History("pay-vip".into(), 1)];
        let a = apply(&s, &Command::DeleteVip { name: "pay-vip".into(), history: read }, now).unwrap();
        let h = |g| ObjectKey::History("pay-vip".into(), g);
        let expected =
            vec![ObjectKey::Vip("pay-vip".into()), ObjectKey::Arbitration("pay-vip".into()), h(1), h(2), h(3)];
        assert_eq!(a.deletes, expected);
        for k in &a.deletes {
            s.delete(k);
        }
        // A VIP created again under the name starts over: no record of the old one's.
        let spec = sample().vips["pay-vip"].spec.clone();
        assert_eq!(run(&mut s, &Command::CreateVip(spec), now), Ok(Outcome::Created));
        assert_eq!(s.arbitration["pay-vip"].history, HistorySpan::default());
        let Outcome::Moved { owner } = run(&mut s, &claim_at("02:00:00:00:00:02", "hv2", now), now).unwrap() else {
            panic!()
        };
        assert_eq!(owner.generation, 1);
    }

    #[test]
    fn generations_go_on_after_the_owner_is_dropped() {
        let mut s = created();
        let members = |m: &[&str]| Command::PutMembers {
            vip: "pay-vip".into(),
            members: m.iter().map(|m| m.to_string()).collect(),
        };
        assert!(matches!(run(&mut s, &claim_at("02:00:00:00:00:01", "hv1", 10), 10), Ok(Outcome::Moved { .. })));
        assert!(matches!(run(&mut s, &claim_at("02:00:00:00:00:02", "hv2", 20), 20), Ok(Outcome::Moved { .. })));
        assert_eq!(run(&mut s, &members(&["pay1"]), 30), Ok(Outcome::Updated));
        assert_eq!(s.vips["pay-vip"].owner, None);
        // The next owner is generation 3: history record 1 is not written over.
        let Outcome::Moved { owner } = run(&mut s, &claim_at("02:00:00:00:00:01", "hv1", 5), 40).unwrap() else {
            panic!()
        };
        assert_eq!(owner.generation, 3, "a new owner after none is not stale either");
        // A VIP stored before arbitration records: dropping its owner records its generation.
        let mut s = sample();
        assert!(matches!(run(&mut s, &claim_at("02:00:00:00:00:02", "hv2", 10), 10), Ok(Outcome::Moved { .. })));
        let a = apply(&s, &members(&["pay1"]), 20).unwrap();
        assert!(matches!(a.puts.as_slice(), [Object::Vip(_), Object::Arbitration(r)] if r.history.last == 1), "{a:?}");
    }

    #[test]
    fn a_damped_claim_writes_nothing() {
        let mut s = created();
        let mut now = 1_000;
        let mut outcomes = Vec::new();
        for i in 0..=claim::Hold::DEFAULT.after_moves + 1 {
            now += 1;
            let m = i % 2 + 1;
            let c = claim_at(&format!("02:00:00:00:00:0{m}"), &format!("hv{m}"), now);
            let a = apply(&s, &c, now).unwrap();
            for obj in a.puts.clone() {
                s.put(obj);
            }
            outcomes.push(a);
        }
        let last = outcomes.pop().unwrap();
        assert!(last.is_empty(), "{last:?}");
        let Outcome::Damped { owner, held_until } = last.outcome else { panic!("{last:?}") };
        assert_eq!((owner, held_until), (s.vips["pay-vip"].owner.clone().unwrap(), now - 1 + 30_000));
        // The move that began the hold wrote the VIP, its history and its arbitration record.
        let began = outcomes.pop().unwrap();
        assert!(matches!(
            began.puts.as_slice(),
            [Object::Vip(_), Object::History(_), Object::Arbitration(a)] if a.damping.held_until == held_until
        ));
    }

    #[test]
    fn expired_history_is_deleted_up_to_a_retained_record() {
        let mut s = created();
        for i in 0..5u64 {
            let m = i % 2 + 1;
            let now = 1_000 + i;
            assert!(matches!(
                run(&mut s, &claim_at(&format!("02:00:00:00:00:0{m}"), &format!("hv{m}"), now), now),
                Ok(Outcome::Moved { .. })
            ));
        }
        let expire =
            |keep_from, keep_from_at| Command::ExpireHistory { vip: "pay-vip".into(), keep_from, keep_from_at };
        let a = apply(&s, &expire(4, 1_003), 0).unwrap();
        let h = |g| ObjectKey::History("pay-vip".into(), g);
        assert_eq!(a.deletes, [h(1), h(2), h(3)]);
        assert_eq!(run(&mut s, &expire(4, 1_003), 0), Ok(Outcome::Updated));
        assert_eq!(s.arbitration["pay-vip"].history, HistorySpan { first: 4, last: 5, first_at: 1_003 });
        assert_eq!(run(&mut s, &expire(4, 1_003), 0), Ok(Outcome::Unchanged));
        // The latest is always retained; nothing outside the span can be named.
        for g in [3, 6] {
            assert_eq!(apply(&s, &expire(g, 0), 0).unwrap_err().code, "not_retained");
        }
    }
}

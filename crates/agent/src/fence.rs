//! Physical attachments served by one gateway at a time: a gateway cut from
//! the underlay lets go of the attachments a standby gateway can take, and
//! takes them back only when a view fetched after the underlay returned
//! still gives them to it.
//!
//! The controller moves an attachment to its standby when it declares the
//! serving gateway dead (see `vipcast_model::command`). The gateway itself
//! cannot hear that while it is cut off, and if it went on bridging the
//! host's segment, both gateways would bridge it: the physical switch would
//! see MACs flap between them, and the segment would loop through the
//! overlay. So:
//!
//! * underlay carrier lost: every local physical port with a standby is
//!   *fenced* (left out of the plan, so detached) at once, well before the
//!   controller's liveness timeout;
//! * underlay carrier back: the view the agent holds may be stale (the
//!   watch stream can take seconds to resume), so fenced ports stay out
//!   until a view fetched afresh from the controller still has them local;
//!   a fenced port the view no longer has local is simply unfenced (it
//!   serves elsewhere).
//!
//! Pure state; the driver reads carrier events, fetches views and programs.

use std::collections::BTreeSet;

use vipcast_model::PortKind;
use vipcast_model::view::ChassisView;

use crate::plan::Plan;

/// The fence of one chassis.
#[derive(Debug, Default)]
pub struct Fence {
    /// Whether the underlay link has carrier (true until told otherwise).
    down: bool,
    /// Ports left out of the plan.
    fenced: BTreeSet<String>,
}

impl Fence {
    /// The underlay link's carrier changed to `up`; whether that changes
    /// anything.
    pub fn underlay(&mut self, up: bool) -> bool {
        let changed = self.down == up;
        self.down = !up;
        changed
    }

    /// Whether a fresh view is needed (carrier is back, ports are fenced).
    pub fn wants_view(&self) -> bool {
        !self.down && !self.fenced.is_empty()
    }

    /// A view fetched after the carrier came back: the fenced ports it has
    /// local are served here again.
    pub fn fresh_view(&mut self, view: &ChassisView) {
        if self.down {
            return;
        }
        let local: BTreeSet<&str> = view.vpcs.values().flat_map(|v| &v.local_ports).map(|p| p.name.as_str()).collect();
        self.fenced.retain(|p| !local.contains(p.as_str()));
    }

    /// `plan` (for `view`, the view the agent holds) without the fenced
    /// ports; the names of those newly fenced.
    pub fn apply(&mut self, view: &ChassisView, plan: &mut Plan) -> Vec<String> {
        let mut newly = Vec::new();
        if self.down {
            for p in view.vpcs.values().flat_map(|v| &v.local_ports) {
                if p.kind == PortKind::Physical && p.standby_chassis.is_some() && self.fenced.insert(p.name.clone()) {
                    newly.push(p.name.clone());
                }
            }
        } else {
            // Gone elsewhere (or deleted): nothing left to hold back.
            let local: BTreeSet<&str> =
                view.vpcs.values().flat_map(|v| &v.local_ports).map(|p| p.name.as_str()).collect();
            self.fenced.retain(|p| local.contains(p.as_str()));
        }
        for v in plan.vpcs.values_mut() {
            for p in &self.fenced {
                v.physical.remove(p);
                v.ports.remove(p);
            }
        }
        newly
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use vipcast_model::Port;
    use vipcast_model::view::{Flood, VpcView};
    use vipcast_packet::MacAddr;

    use super::*;

    fn view(ports: &[(&str, Option<&str>)]) -> ChassisView {
        let local_ports = ports
            .iter()
            .map(|(name, standby)| Port {
                kind: PortKind::Physical,
                interface: Some(format!("if-{name}")),
                standby_chassis: standby.map(str::to_string),
                ..Port::vm(*name, "prod", "web", "gw1", MacAddr([2, 0, 0, 0, 0, 1]), "192.168.10.21".parse().unwrap())
            })
            .collect();
        let vpc = VpcView {
            name: "prod".into(),
            vni: 100,
            encap: Default::default(),
            arp_suppression: true,
            subnets: Vec::new(),
            local_ports,
            fdb: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            flood: Flood::Headend(Vec::new()),
            vips: Vec::new(),
            gateway_mac: None,
        };
        ChassisView {
            chassis: "gw1".into(),
            underlay_ip: "10.255.0.12".parse().unwrap(),
            role: vipcast_model::Role::Gateway,
            vpcs: BTreeMap::from([("prod".to_string(), vpc)]),
        }
    }

    fn planned(v: &ChassisView, f: &mut Fence) -> (Vec<String>, BTreeSet<String>) {
        let mut p = crate::plan::plan(v, &|_| true);
        let newly = f.apply(v, &mut p);
        (newly, p.vpcs[&100].physical.keys().cloned().collect())
    }

    #[test]
    fn fenced_from_carrier_loss_until_a_fresh_view_confirms() {
        let v = view(&[("metal1", None), ("metal2", Some("gw2"))]);
        let mut f = Fence::default();
        assert_eq!(planned(&v, &mut f).1, BTreeSet::from(["metal1".into(), "metal2".into()]));
        assert!(!f.underlay(true), "up from the start");
        assert!(f.underlay(false));
        // Only the port a standby can take is let go.
        assert_eq!(planned(&v, &mut f), (vec!["metal2".to_string()], BTreeSet::from(["metal1".into()])));
        assert!(!f.wants_view(), "no view while cut off");
        assert!(f.underlay(true));
        assert!(f.wants_view());
        // The stale view still has it local: still fenced.
        assert_eq!(planned(&v, &mut f).1, BTreeSet::from(["metal1".into()]));
        // A fresh view gives it here still (never declared dead): back.
        f.fresh_view(&v);
        assert!(!f.wants_view());
        assert_eq!(planned(&v, &mut f).1, BTreeSet::from(["metal1".into(), "metal2".into()]));
    }

    #[test]
    fn a_port_moved_to_the_standby_is_unfenced_by_the_view_that_moved_it() {
        let v = view(&[("metal2", Some("gw2"))]);
        let mut f = Fence::default();
        f.underlay(false);
        planned(&v, &mut f);
        f.underlay(true);
        // A fresh view says metal2 is on gw2 now: the view held here is
        // stale until the watch brings that too, so it stays fenced.
        let moved = view(&[]);
        f.fresh_view(&moved);
        assert_eq!(planned(&v, &mut f).1, BTreeSet::new());
        // The watch's view: not local, nothing left to hold back.
        assert_eq!(planned(&moved, &mut f).1, BTreeSet::new());
        assert!(!f.wants_view(), "nothing fenced any more");
        // Moved back later by the controller (the standby died): served.
        assert_eq!(planned(&v, &mut f).1, BTreeSet::from(["metal2".into()]));
    }
}

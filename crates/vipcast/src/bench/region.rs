//! The region a control-plane benchmark registers: which chassis take part
//! in which VPC, and every object's name and addresses. A pure function of
//! the sizes and a seed, so a run can be repeated.
//!
//! Shape (what a public cloud region looks like, not a full mesh):
//! - each VPC spans 5 to 50 chassis, except a few that span 500 (one per
//!   500 VPCs, at least one once there are 1,000 chassis);
//! - each chassis hosts ports of 2 to 10 VPCs; one port per chassis and VPC
//!   it takes part in;
//! - `vpcs == 1` is the other extreme: one VPC over every chassis;
//! - VIP k belongs to VPC k mod V and has two member ports of it, on two
//!   different chassis.
//!
//! Address plan, collision-free at any size: VPC v has VNI 1000+v and the
//! subnet 10.0.0.0/16 of its own (VPCs are isolated: addresses repeat
//! across VPCs, as tenants' do); its j-th port is 10.0.(j/250).(j%250+1),
//! its VIPs 10.0.(255-i/250).(i%250+1); MACs are 02:00 followed by the
//! region-wide port number; chassis n's underlay address is 172.16.0.0 + n + 1.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use vipcast_model::{BumMode, Chassis, Command, Dataplane, Encap, Port, Replicator, Role, Subnet, VipSpec, Vpc};
use vipcast_packet::MacAddr;

/// Per-VPC span bounds and the span of the few large VPCs.
const SPAN: (usize, usize) = (5, 50);
const LARGE_SPAN: usize = 500;
/// VPCs per chassis.
const DEGREE: (usize, usize) = (2, 10);
/// Ports and VIPs a VPC's /16 is planned for.
const MAX_PORTS_PER_VPC: usize = 250 * 200;
const MAX_VIPS_PER_VPC: usize = 250 * 50;

/// A planned region.
#[derive(Debug, Clone)]
pub struct Region {
    pub chassis: usize,
    /// Per VPC: the chassis taking part (distinct, in port order).
    pub vpcs: Vec<Vec<usize>>,
    /// Per VIP: (vpc, member port index a, member port index b) — port
    /// indexes into the VPC's chassis list.
    pub vips: Vec<(usize, usize, usize)>,
    pub replicators: usize,
}

/// splitmix64: a small deterministic generator (the plan needs no more).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

impl Region {
    /// Plans `chassis` chassis, `vpcs` VPCs and `vips` VIPs; an error says
    /// which bound the sizes cannot meet.
    pub fn plan(chassis: usize, vpcs: usize, vips: usize, replicators: usize, seed: u64) -> Result<Region, String> {
        if chassis < 2 {
            return Err("--chassis must be at least 2".into());
        }
        if vpcs == 0 {
            return Err("--vpcs must be at least 1".into());
        }
        if vips.div_ceil(vpcs) > MAX_VIPS_PER_VPC {
            return Err(format!("--vips {vips} over --vpcs {vpcs}: at most {MAX_VIPS_PER_VPC} VIPs per VPC"));
        }
        let mut rng = Rng(seed);
        let vpc_chassis = if vpcs == 1 {
            if chassis > MAX_PORTS_PER_VPC {
                return Err(format!("one VPC holds at most {MAX_PORTS_PER_VPC} ports"));
            }
            vec![(0..chassis).collect()]
        } else {
            spread(chassis, vpcs, &mut rng)?
        };
        let vips = (0..vips)
            .map(|k| {
                let v = k % vpcs;
                let n = vpc_chassis[v].len();
                let i = k / vpcs;
                (v, (2 * i) % n, (2 * i + 1) % n)
            })
            .collect();
        Ok(Region { chassis, vpcs: vpc_chassis, vips, replicators })
    }

    /// Ports in the region.
    pub fn ports(&self) -> usize {
        self.vpcs.iter().map(Vec::len).sum()
    }

    pub fn vpc_name(v: usize) -> String {
        format!("vpc{v}")
    }

    pub fn chassis_name(n: usize) -> String {
        format!("hv{n}")
    }

    pub fn vip_name(k: usize) -> String {
        format!("vip{k}")
    }

    pub fn replicator_name(r: usize) -> String {
        format!("rep{r}")
    }

    /// The name and MAC of port `j` of VPC `v` (`first[v]`: the region-wide
    /// number of its first port, from [`Region::first_ports`]).
    pub fn port(first: &[usize], v: usize, j: usize) -> (String, MacAddr) {
        let g = (first[v] + j) as u32;
        let [a, b, c, d] = g.to_be_bytes();
        (format!("v{v}p{j}"), MacAddr([0x02, 0x00, a, b, c, d]))
    }

    /// The region-wide number of each VPC's first port.
    pub fn first_ports(&self) -> Vec<usize> {
        let mut at = 0;
        self.vpcs
            .iter()
            .map(|c| {
                let f = at;
                at += c.len();
                f
            })
            .collect()
    }

    pub fn underlay(n: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xac10_0000u32 + n as u32 + 1))
    }

    /// The commands that register the region, in an order that validates.
    pub fn commands(&self) -> Vec<Command> {
        let mut out = Vec::new();
        for v in 0..self.vpcs.len() {
            out.push(Command::CreateVpc(Vpc {
                name: Region::vpc_name(v),
                vni: 1000 + v as u32,
                bum: if v % 4 == 3 { BumMode::Replicator } else { BumMode::Headend },
                arp_suppression: true,
                assist: true,
                encap: Encap::Vxlan,
            }));
            out.push(Command::CreateSubnet(Subnet {
                vpc: Region::vpc_name(v),
                name: "net".into(),
                cidr: "10.0.0.0/16".parse().expect("a literal CIDR"),
                gateway: None,
            }));
        }
        for n in 0..self.chassis {
            out.push(Command::PutChassis(Chassis {
                name: Region::chassis_name(n),
                underlay_ip: Region::underlay(n),
                role: Role::Hypervisor,
                dataplane: Dataplane::Kernel,
                liveness: None,
            }));
        }
        let first = self.first_ports();
        for (v, chassis) in self.vpcs.iter().enumerate() {
            for (j, &n) in chassis.iter().enumerate() {
                let (name, mac) = Region::port(&first, v, j);
                out.push(Command::CreatePort(Port::vm(
                    name,
                    Region::vpc_name(v),
                    "net",
                    Region::chassis_name(n),
                    mac,
                    IpAddr::V4(Ipv4Addr::new(10, 0, (j / 250) as u8, (j % 250 + 1) as u8)),
                )));
            }
        }
        let mut per_vpc = vec![0usize; self.vpcs.len()];
        for (k, &(v, a, b)) in self.vips.iter().enumerate() {
            let i = per_vpc[v];
            per_vpc[v] += 1;
            out.push(Command::CreateVip(VipSpec {
                name: Region::vip_name(k),
                vpc: Region::vpc_name(v),
                subnet: "net".into(),
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, (255 - i / 250) as u8, (i % 250 + 1) as u8)),
                members: vec![Region::port(&first, v, a).0, Region::port(&first, v, b).0],
            }));
        }
        for r in 0..self.replicators {
            out.push(Command::PutReplicator(Replicator {
                name: Region::replicator_name(r),
                address: format!("172.31.255.{}:4789", r + 1).parse().expect("a literal address"),
            }));
        }
        out
    }
}

/// Spans per VPC, then chassis per VPC (distinct), each chassis in 2..=10 VPCs.
fn spread(chassis: usize, vpcs: usize, rng: &mut Rng) -> Result<Vec<Vec<usize>>, String> {
    let large = if chassis >= 1000 { (vpcs / 500).max(1) } else { 0 };
    let mut spans: Vec<usize> = (0..vpcs)
        .map(|v| if v < large { LARGE_SPAN.min(chassis) } else { rng.between(SPAN.0, SPAN.1).min(chassis) })
        .collect();
    let total: usize = spans.iter().sum();
    let (lo, hi) = (DEGREE.0 * chassis, DEGREE.1 * chassis);
    if total < lo || total > hi {
        let per = total as f64 / chassis as f64;
        return Err(format!(
            "{vpcs} VPCs of 5-50 chassis put each of {chassis} chassis in {per:.1} VPCs on average, outside \
             {}-{}: use about --vpcs {} (one VPC per 5 chassis)",
            DEGREE.0,
            DEGREE.1,
            (chassis / 5).max(2)
        ));
    }
    // Degrees: 2 each, the rest spread at random under 10.
    let mut degree = vec![DEGREE.0; chassis];
    let mut left = total - lo;
    while left > 0 {
        let c = rng.between(0, chassis - 1);
        if degree[c] < DEGREE.1 {
            degree[c] += 1;
            left -= 1;
        }
    }
    let mut pool: Vec<usize> = degree.iter().enumerate().flat_map(|(c, &d)| std::iter::repeat_n(c, d)).collect();
    for i in (1..pool.len()).rev() {
        let j = rng.between(0, i);
        pool.swap(i, j);
    }
    // Largest VPCs first, so the last ones (small) meet few repeats.
    let mut order: Vec<usize> = (0..vpcs).collect();
    order.sort_by_key(|&v| std::cmp::Reverse(spans[v]));
    let mut out = vec![Vec::new(); vpcs];
    for v in order {
        let mut members = BTreeSet::new();
        let mut list = Vec::with_capacity(spans[v]);
        while list.len() < spans[v] {
            let Some(c) = pool.pop() else { break };
            if members.insert(c) {
                list.push(c);
                continue;
            }
            // A repeat: trade it for a stub of another chassis still in the pool.
            let swap = (0..pool.len()).rev().find(|&i| !members.contains(&pool[i]));
            match swap {
                Some(i) => {
                    let other = std::mem::replace(&mut pool[i], c);
                    members.insert(other);
                    list.push(other);
                }
                // Only this chassis is left: the VPC is one smaller.
                None => spans[v] -= 1,
            }
        }
        out[v] = list;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use vipcast_model::State;
    use vipcast_model::command::apply;

    use super::*;

    fn shape(r: &Region) -> (usize, usize, usize, usize) {
        let mut degree = BTreeMap::<usize, usize>::new();
        for c in &r.vpcs {
            for &n in c {
                *degree.entry(n).or_default() += 1;
            }
        }
        let spans: Vec<usize> = r.vpcs.iter().map(Vec::len).collect();
        (
            *spans.iter().min().unwrap(),
            *spans.iter().max().unwrap(),
            *degree.values().min().unwrap(),
            *degree.values().max().unwrap(),
        )
    }

    #[test]
    fn a_region_has_the_shape_asked_for() {
        for (chassis, vpcs) in [(1000, 200), (3000, 600), (10_000, 2000)] {
            let r = Region::plan(chassis, vpcs, 2 * vpcs, 4, 7).unwrap();
            let (min_span, max_span, min_deg, max_deg) = shape(&r);
            assert!(min_span >= 5 && max_span == 500, "{chassis}: spans {min_span}..{max_span}");
            assert!(min_deg >= 2 && max_deg <= 10, "{chassis}: degrees {min_deg}..{max_deg}");
            assert_eq!(r.vpcs.iter().filter(|c| c.len() == 500).count(), (vpcs / 500).max(1));
            for c in &r.vpcs {
                assert_eq!(c.iter().collect::<HashSet<_>>().len(), c.len(), "a chassis twice in one VPC");
            }
            // The same seed, the same region.
            assert_eq!(Region::plan(chassis, vpcs, 2 * vpcs, 4, 7).unwrap().vpcs, r.vpcs);
        }
        let mesh = Region::plan(1000, 1, 10, 0, 1).unwrap();
        assert_eq!(mesh.vpcs[0].len(), 1000);
    }

    #[test]
    fn sizes_that_cannot_have_the_shape_are_refused() {
        let e = Region::plan(1000, 2000, 10, 4, 1).unwrap_err();
        assert!(e.contains("--vpcs 200"), "{e}");
        assert!(Region::plan(1, 1, 1, 0, 1).is_err());
    }

    /// Every command validates (no address, MAC or name collides), at a
    /// size with VPCs of 500 and many VIPs per VPC.
    #[test]
    fn the_address_plan_never_collides() {
        let r = Region::plan(2000, 400, 4000, 4, 3).unwrap();
        let mut state = State::default();
        for cmd in r.commands() {
            let applied = apply(&state, &cmd, 1).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            for o in applied.puts {
                state.put(o);
            }
        }
        assert_eq!(state.ports.len(), r.ports());
        assert_eq!(state.vips.len(), 4000);
        let mesh = Region::plan(600, 1, 300, 1, 3).unwrap();
        let mut state = State::default();
        for cmd in mesh.commands() {
            for o in apply(&state, &cmd, 1).unwrap_or_else(|e| panic!("{cmd:?}: {e}")).puts {
                state.put(o);
            }
        }
    }
}

//! An SVG timeline of runs, written by hand: one lane per run (e.g. the
//! overlay's median run and the baseline's), each probe a sliver at its send
//! time, coloured by who answered it (red: nobody), and the stages of the
//! first lane marked with labelled lines.

use std::fmt::Write;

use crate::report::{StageTimes, Timeline};

/// One lane: a label, the probes, and the stages to mark (ms after the fault).
#[derive(Debug, Clone, Copy)]
pub struct Lane<'a> {
    pub label: &'a str,
    pub timeline: &'a Timeline,
    pub stages: &'a StageTimes,
    pub outage_ms: f64,
}

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 230.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 130.0;
const LANE_H: f64 = 34.0;
const LANE_GAP: f64 = 26.0;
const LOST: &str = "#e45756";
const OLD: &str = "#4c78a8";
const OTHERS: [&str; 4] = ["#54a24b", "#f58518", "#b279a2", "#72b7b2"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The SVG document.
pub fn timeline(title: &str, lanes: &[Lane<'_>]) -> String {
    // Time range, ms after the fault: a little before it, to the last end.
    let t0 = -100.0;
    let end = lanes.iter().map(|l| l.timeline.end_us as f64 / 1000.0).fold(200.0, f64::max);
    let step = if end > 2000.0 {
        500.0
    } else if end > 800.0 {
        200.0
    } else {
        100.0
    };
    let t1 = (end / step).ceil() * step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |ms: f64| LEFT + (ms.clamp(t0, t1) - t0) / (t1 - t0) * plot_w;
    let lanes_h = lanes.len() as f64 * (LANE_H + LANE_GAP);
    let height = TOP + lanes_h + 70.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="20" y="22" font-size="15" font-weight="bold">{}</text>"#, esc(title));
    // Colours: per lane, the master before the fault, then the others in
    // the order the session met them (with two members: the new master).
    let colour = |lane: &Lane<'_>, r: Option<u16>| -> &'static str {
        let Some(name) = r.and_then(|i| lane.timeline.responders.get(usize::from(i))) else { return LOST };
        if *name == lane.timeline.old_master {
            return OLD;
        }
        let i = lane.timeline.responders.iter().filter(|n| **n != lane.timeline.old_master).position(|n| n == name);
        OTHERS.get(i.unwrap_or(0) % OTHERS.len()).copied().unwrap_or(LOST)
    };
    let others = lanes.iter().map(|l| l.timeline.responders.len().saturating_sub(1)).max().unwrap_or(1).max(1);
    let mut legend: Vec<(String, &str)> = vec![("answered by the master before the fault".into(), OLD)];
    legend.push(("answered by the new master".into(), OTHERS[0]));
    for (k, c) in OTHERS.iter().enumerate().take(others).skip(1) {
        legend.push((format!("answered by member #{}", k + 2), c));
    }
    legend.push(("no reply".into(), LOST));
    let mut lx = 20.0;
    for (label, c) in &legend {
        let _ = writeln!(s, r#"<rect x="{lx}" y="36" width="12" height="12" fill="{c}"/>"#);
        let _ = writeln!(s, r#"<text x="{}" y="46">{}</text>"#, lx + 16.0, esc(label));
        lx += 26.0 + 7.0 * label.len() as f64;
    }
    // Axis grid.
    let axis_y = TOP + lanes_h;
    let mut t = t0;
    while t <= t1 + 1e-9 {
        let gx = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{axis_y}" stroke="#ddd"/><text x="{gx:.1}" y="{}" text-anchor="middle" fill="#444">{}</text>"##,
            axis_y + 16.0,
            if t == 0.0 { "0".to_string() } else { format!("{t:+.0}") }
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#444">ms after the fault (probe send time)</text>"##,
        LEFT + plot_w / 2.0,
        axis_y + 36.0
    );
    for (i, lane) in lanes.iter().enumerate() {
        let y = TOP + i as f64 * (LANE_H + LANE_GAP) + LANE_GAP / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + LANE_H / 2.0 - 2.0,
            esc(lane.label)
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#444" font-size="11">outage {:.0} ms</text>"##,
            LEFT - 8.0,
            y + LANE_H / 2.0 + 12.0,
            lane.outage_ms
        );
        // Consecutive probes of the same colour become one rectangle.
        let tl = lane.timeline;
        let mut run: Option<(f64, f64, &str)> = None;
        let flush = |s: &mut String, r: (f64, f64, &str)| {
            let (a, b, c) = r;
            let (xa, xb) = (x(a), x(b));
            let _ = writeln!(
                s,
                r#"<rect x="{xa:.2}" y="{y}" width="{:.2}" height="{LANE_H}" fill="{c}"/>"#,
                (xb - xa).max(0.6)
            );
        };
        for &(off_us, r) in &tl.probes {
            let a = off_us as f64 / 1000.0;
            let b = a + tl.interval_us.max(1) as f64 / 1000.0;
            if a < t0 || a > t1 {
                continue;
            }
            let c = colour(lane, r);
            run = match run {
                Some((ra, _, rc)) if rc == c => Some((ra, b, c)),
                Some(prev) => {
                    flush(&mut s, prev);
                    Some((a, b, c))
                }
                None => Some((a, b, c)),
            };
        }
        if let Some(r) = run {
            flush(&mut s, r);
        }
        // Stage markers: every lane's own within its band; labels for the first.
        let st = lane.stages;
        let marks = [
            (Some(0.0), "fault", "#000"),
            (st.assisted_ms, "priority-0 advert sent for the master", "#a0522d"),
            (st.garp_sniffed_ms, "GARP sniffed", "#7f3c8d"),
            (st.claim_accepted_ms, "claim accepted", "#11a579"),
            (st.last_agent_ms, "last agent re-programmed", "#3969ac"),
            (st.first_new_reply_ms, "new master answers", "#e68310"),
        ];
        let mut row = 0.0;
        for (at, label, c) in &marks {
            let Some(at) = at else { continue };
            let mx = x(*at);
            let _ = writeln!(
                s,
                r#"<line x1="{mx:.1}" y1="{}" x2="{mx:.1}" y2="{}" stroke="{c}" stroke-width="1.5" stroke-dasharray="4 2"/>"#,
                y - 6.0,
                y + LANE_H + 6.0
            );
            if i == 0 {
                let ly = 66.0 + 12.0 * row;
                row += 1.0;
                let _ = writeln!(
                    s,
                    r#"<line x1="{mx:.1}" y1="{}" x2="{mx:.1}" y2="{}" stroke="{c}" stroke-width="0.8"/><text x="{:.1}" y="{ly}" fill="{c}" font-size="11">{} ({at:+.0} ms)</text>"#,
                    ly + 2.0,
                    y - 6.0,
                    mx + 3.0,
                    esc(label)
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_is_well_formed_svg() {
        let mut probes = Vec::new();
        for i in -100..600i64 {
            let r = match i {
                ..0 => Some(0),
                0..350 => None,
                _ => Some(1),
            };
            probes.push((i * 1000, r));
        }
        let tl = Timeline {
            probes,
            responders: vec!["pay1".into(), "pay2".into()],
            old_master: "pay1".into(),
            end_us: 600_000,
            interval_us: 1000,
        };
        let st = StageTimes { garp_sniffed_ms: Some(340.0), first_new_reply_ms: Some(351.0), ..StageTimes::default() };
        let svg = timeline(
            "link-down <pay1> & co",
            &[
                Lane { label: "overlay", timeline: &tl, stages: &st, outage_ms: 351.0 },
                Lane { label: "baseline", timeline: &tl, stages: &StageTimes::default(), outage_ms: 340.0 },
            ],
        );
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("link-down &lt;pay1&gt; &amp; co"));
        // Three colour runs per lane (old master, lost, new master).
        assert_eq!(svg.matches(&format!("fill=\"{LOST}\"/>")).count(), 2 + 1, "{svg}");
        assert!(svg.contains("GARP sniffed (+340 ms)"));
        // Every opened tag is closed or self-closing.
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }
}

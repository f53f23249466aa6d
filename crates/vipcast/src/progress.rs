//! Progress lines for people (`vipcast lab up|down`, `drill`, `demo`), on
//! stderr. On a terminal, the phase under way is one line rewritten in
//! place with its running time, and becomes `✓ phase (1.2 s)` when the next
//! one starts; otherwise (a log, CI) each phase is a plain line stamped with
//! the time since the start.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the terminal shows.
#[derive(Debug)]
struct Progress {
    start: Instant,
    tty: bool,
    /// The phase under way on the terminal, and since when.
    current: Option<(String, Instant)>,
    ticker: bool,
}

static PROGRESS: Mutex<Option<Progress>> = Mutex::new(None);

const SPINNER: [char; 4] = ['|', '/', '-', '\\'];

/// The text of one update. `tty`: the line under way is rewritten (`\r`,
/// erase line); `done`: the phase that just ended, with how long it took.
fn render(tty: bool, since_start: Duration, done: Option<(&str, Duration)>, text: &str, tick: usize) -> String {
    if !tty {
        return format!("[{:>6.1} s] {text}\n", since_start.as_secs_f64());
    }
    let mut out = String::new();
    if let Some((d, took)) = done {
        out.push_str(&format!("\r\x1b[2K✓ {d} ({:.1} s)\n", took.as_secs_f64()));
    }
    let spin = SPINNER.get(tick % SPINNER.len()).copied().unwrap_or('|');
    out.push_str(&format!("\r\x1b[2K{spin} {text}"));
    out
}

/// A new phase (or a remark) for people.
pub fn line(text: &str) {
    let mut g = PROGRESS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let p = g.get_or_insert_with(|| Progress {
        start: Instant::now(),
        tty: std::io::stderr().is_terminal(),
        current: None,
        ticker: false,
    });
    let now = Instant::now();
    let previous = p.current.take();
    let done = previous.as_ref().map(|(t, at)| (t.as_str(), now.duration_since(*at)));
    let out = render(p.tty, now.duration_since(p.start), done, text, 0);
    let _ = std::io::stderr().write_all(out.as_bytes());
    if p.tty {
        p.current = Some((text.to_string(), now));
        if !p.ticker {
            p.ticker = true;
            std::thread::spawn(tick);
        }
    }
}

/// Ends the phase under way (before printing results on stdout).
pub fn finish() {
    let mut g = PROGRESS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = g.as_mut()
        && let Some((t, at)) = p.current.take()
    {
        let _ = write!(std::io::stderr(), "\r\x1b[2K✓ {t} ({:.1} s)\n", at.elapsed().as_secs_f64());
    }
}

/// Rewrites the line under way with its running time, 5 times a second.
fn tick() {
    for n in 1usize.. {
        std::thread::sleep(Duration::from_millis(200));
        let g = PROGRESS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(Progress { current: Some((t, at)), .. }) = g.as_ref() {
            let text = format!("{t}  {:.1} s", at.elapsed().as_secs_f64());
            let _ = std::io::stderr().write_all(render(true, Duration::ZERO, None, &text, n).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_off_a_terminal_and_one_rewritten_line_on_one() {
        let s = Duration::from_millis;
        assert_eq!(render(false, s(1234), None, "starting agents", 0), "[   1.2 s] starting agents\n");
        assert_eq!(render(false, s(5000), Some(("x", s(1))), "y", 0), "[   5.0 s] y\n", "no ticks off a terminal");
        let t = render(true, s(0), Some(("building the underlay", s(1500))), "starting agents", 1);
        assert_eq!(t, "\r\x1b[2K✓ building the underlay (1.5 s)\n\r\x1b[2K/ starting agents");
        assert!(!t.ends_with('\n'), "the phase under way stays on its line");
    }
}

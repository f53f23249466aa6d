//! A keepalived.conf **subset**, with keepalived's meanings and defaults.
//!
//! ```text
//!  text ──lex──► tokens (line numbers; `{` `}` split off; `#` / `!` comments;
//!                "quoted strings")
//!       ──tree──► statements: KEYWORD ARGS... [{ statements }]
//!       ──interpret──► Conf { global, instances, scripts, sync_groups } + warnings
//! ```
//!
//! Supported (everything else is a [`Warning`] naming file and line, and is
//! ignored):
//!
//! * `global_defs`: `router_id`, `vrrp_version`, `vrrp_garp_master_delay`,
//!   `vrrp_garp_master_repeat`, `vrrp_garp_master_refresh`,
//!   `vrrp_garp_master_refresh_repeat`, `vrrp_garp_lower_prio_delay`,
//!   `vrrp_garp_lower_prio_repeat`, `vrrp_lower_prio_no_advert`;
//! * `vrrp_instance NAME`: `state`, `interface`, `virtual_router_id`,
//!   `priority`, `advert_int`, `version`, `nopreempt`, `preempt`,
//!   `preempt_delay`, `accept`, `no_accept`, `unicast_src_ip`,
//!   `unicast_peer { ADDR... }`, `virtual_ipaddress { ADDR[/PREFIX] [dev IF] }`,
//!   `track_interface { IF [weight W] }`, `track_script { NAME [weight W] }`,
//!   `notify_master`, `notify_backup`, `notify_fault`, `notify`,
//!   `dont_track_primary`, `garp_master_delay`, `garp_master_repeat`,
//!   `garp_master_refresh`, `garp_master_refresh_repeat`,
//!   `garp_lower_prio_delay`, `garp_lower_prio_repeat`;
//! * `vrrp_script NAME`: `script`, `interval`, `timeout`, `weight`, `fall`,
//!   `rise`, `init_fail`;
//! * `vrrp_sync_group NAME`: `group { INSTANCE... }`, `notify_master`,
//!   `notify_backup`, `notify_fault`, `notify`.
//!
//! Errors name the file, the line and what is wrong. Parsing never panics
//! (property-tested on arbitrary input).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use vipcast_vrrp::{GarpConfig, MAX_WEIGHT, StartAs, Version};

/// A problem that stops the configuration from being used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ConfError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Something ignored (an unsupported keyword), with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: warning: {}", self.file, self.line, self.message)
    }
}

/// `global_defs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub router_id: Option<String>,
    /// `vrrp_version`, default 2 (keepalived's default).
    pub version: Version,
    pub garp: GarpConfig,
    pub lower_prio_no_advert: bool,
}

impl Default for Global {
    fn default() -> Self {
        Global { router_id: None, version: Version::V2, garp: GarpConfig::default(), lower_prio_no_advert: false }
    }
}

/// One `virtual_ipaddress` line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Vip {
    /// The address and its prefix (keepalived's default: /32, /128).
    pub net: IpNet,
    /// `dev IF`: the interface it goes on; `None`: the instance's.
    pub dev: Option<String>,
}

/// A tracked interface or script with its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRef {
    pub name: String,
    /// `weight W` on the track line; `None`: the script's own weight (or 0).
    pub weight: Option<i16>,
    pub line: usize,
}

/// Notify scripts (keepalived: `notify_master` etc. are run on entering the
/// state; `notify` gets `INSTANCE|GROUP NAME STATE PRIORITY` appended).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    pub any: Option<String>,
}

/// `vrrp_instance NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConf {
    pub name: String,
    pub line: usize,
    pub start_as: StartAs,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub version: Version,
    pub advert_interval_cs: u16,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub accept: bool,
    pub unicast_src_ip: Option<IpAddr>,
    pub unicast_peers: Vec<IpAddr>,
    pub vips: Vec<Vip>,
    pub track_interfaces: Vec<TrackRef>,
    pub track_scripts: Vec<TrackRef>,
    /// keepalived tracks the instance's own interface (weight 0) unless
    /// `dont_track_primary`.
    pub track_primary: bool,
    pub notify: Notify,
    pub garp: GarpConfig,
    pub lower_prio_no_advert: bool,
}

impl InstanceConf {
    /// The instance's address family (that of its first virtual address).
    pub fn is_ipv6(&self) -> bool {
        self.vips.first().is_some_and(|v| v.net.addr().is_ipv6())
    }
}

/// `vrrp_script NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptConf {
    pub name: String,
    pub line: usize,
    pub script: String,
    /// Default 1 s.
    pub interval: Duration,
    /// Default: the interval.
    pub timeout: Duration,
    /// Default 0 (failure means FAULT).
    pub weight: i16,
    /// Consecutive failures before it counts as down. Default 1.
    pub fall: u32,
    /// Consecutive successes before it counts as up. Default 1.
    pub rise: u32,
    /// `init_fail`: start down rather than up.
    pub init_fail: bool,
}

/// `vrrp_sync_group NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupConf {
    pub name: String,
    pub line: usize,
    pub members: Vec<String>,
    pub notify: Notify,
}

/// A whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conf {
    pub global: Global,
    pub instances: Vec<InstanceConf>,
    pub scripts: BTreeMap<String, ScriptConf>,
    pub sync_groups: Vec<SyncGroupConf>,
}

impl Conf {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<(Conf, Vec<Warning>), ConfError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfError {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        parse(&text, &path.display().to_string())
    }
}

// ----- lexing ---------------------------------------------------------------

/// A token: words borrow from the text (no allocation per token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'t> {
    Word(&'t str),
    Open,
    Close,
    Newline,
}

fn lex<'t>(text: &'t str) -> Vec<(Tok<'t>, usize)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        // Where the word in progress started.
        let mut start: Option<usize> = None;
        let flush = |start: &mut Option<usize>, end: usize, out: &mut Vec<(Tok<'t>, usize)>| {
            if let Some(w) = start.take().and_then(|s| raw.get(s..end)) {
                out.push((Tok::Word(w), line));
            }
        };
        let mut chars = raw.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '#' | '!' if start.is_none() => break,
                '"' if start.is_none() => {
                    let mut to = raw.len();
                    for (j, d) in chars.by_ref() {
                        if d == '"' {
                            to = j;
                            break;
                        }
                    }
                    out.push((Tok::Word(raw.get(at + 1..to).unwrap_or_default()), line));
                }
                '{' | '}' => {
                    flush(&mut start, at, &mut out);
                    out.push((if c == '{' { Tok::Open } else { Tok::Close }, line));
                }
                c if c.is_whitespace() => flush(&mut start, at, &mut out),
                _ => {
                    start.get_or_insert(at);
                }
            }
        }
        flush(&mut start, raw.len(), &mut out);
        out.push((Tok::Newline, line));
    }
    out
}

/// `KEYWORD ARGS... [{ children }]`
#[derive(Debug, Clone)]
struct Stmt<'t> {
    key: &'t str,
    args: Vec<&'t str>,
    block: Option<Vec<Stmt<'t>>>,
    line: usize,
}

impl<'t> Stmt<'t> {
    /// Every word of a list block (keys and args of its lines), with lines.
    fn words(&self) -> Vec<(&'t str, usize)> {
        let mut v: Vec<(&'t str, usize)> = self.args.iter().map(|a| (*a, self.line)).collect();
        for c in self.block.iter().flatten() {
            v.push((c.key, c.line));
            v.extend(c.args.iter().map(|a| (*a, c.line)));
        }
        v
    }
}

struct Parser<'a> {
    file: &'a str,
    toks: Vec<(Tok<'a>, usize)>,
    pos: usize,
    warnings: Vec<Warning>,
}

impl<'a> Parser<'a> {
    fn err(&self, line: usize, message: impl Into<String>) -> ConfError {
        ConfError { file: self.file.to_string(), line, message: message.into() }
    }

    fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.warnings.push(Warning { file: self.file.to_string(), line, message: message.into() });
    }

    /// Statements until a `}` (when `nested`) or the end.
    fn stmts(&mut self, nested: Option<usize>) -> Result<Vec<Stmt<'a>>, ConfError> {
        let mut out = Vec::new();
        loop {
            let Some((tok, line)) = self.toks.get(self.pos).cloned() else {
                return match nested {
                    Some(open) => Err(self.err(open, "block opened here is never closed (missing '}')")),
                    None => Ok(out),
                };
            };
            self.pos += 1;
            match tok {
                Tok::Newline => {}
                Tok::Close => {
                    return match nested {
                        Some(_) => Ok(out),
                        None => Err(self.err(line, "'}' without a matching '{'")),
                    };
                }
                Tok::Open => {
                    // A block without a keyword: keep its contents as one statement.
                    let block = self.stmts(Some(line))?;
                    out.push(Stmt { key: "", args: Vec::new(), block: Some(block), line });
                }
                Tok::Word(key) => {
                    let mut args = Vec::new();
                    let mut block = None;
                    while let Some((t, l)) = self.toks.get(self.pos).cloned() {
                        match t {
                            Tok::Word(w) => {
                                args.push(w);
                                self.pos += 1;
                            }
                            Tok::Open => {
                                self.pos += 1;
                                block = Some(self.stmts(Some(l))?);
                                break;
                            }
                            Tok::Newline | Tok::Close => break,
                        }
                    }
                    // `keyword` NEWLINE `{` (brace on the next line).
                    if block.is_none() {
                        let mut p = self.pos;
                        while matches!(self.toks.get(p), Some((Tok::Newline, _))) {
                            p += 1;
                        }
                        if let Some((Tok::Open, l)) = self.toks.get(p).cloned() {
                            self.pos = p + 1;
                            block = Some(self.stmts(Some(l))?);
                        }
                    }
                    out.push(Stmt { key, args, block, line });
                }
            }
        }
    }
}

// ----- interpreting ---------------------------------------------------------

/// Parses a configuration; `file` names it in errors and warnings.
pub fn parse(text: &str, file: &str) -> Result<(Conf, Vec<Warning>), ConfError> {
    let mut p = Parser { file, toks: lex(text), pos: 0, warnings: Vec::new() };
    let top = p.stmts(None)?;
    let mut conf = Conf::default();
    // global_defs first: instances take their defaults from it.
    for s in top.iter().filter(|s| s.key == "global_defs") {
        global(&mut p, s, &mut conf.global)?;
    }
    let mut instance_stmts = Vec::new();
    for s in &top {
        match s.key {
            "global_defs" => {}
            "vrrp_instance" => instance_stmts.push(s),
            "vrrp_script" => {
                let sc = script(&mut p, s)?;
                if conf.scripts.contains_key(&sc.name) {
                    return Err(p.err(s.line, format!("vrrp_script {} is defined twice", sc.name)));
                }
                conf.scripts.insert(sc.name.clone(), sc);
            }
            "vrrp_sync_group" => conf.sync_groups.push(sync_group(&mut p, s)?),
            "" => p.warn(s.line, "a block without a keyword is ignored"),
            other => p.warn(s.line, format!("unsupported keyword {other:?} ignored (with its block)")),
        }
    }
    for s in instance_stmts {
        let inst = instance(&mut p, s, &conf.global)?;
        if conf.instances.iter().any(|i| i.name == inst.name) {
            return Err(p.err(s.line, format!("vrrp_instance {} is defined twice", inst.name)));
        }
        if let Some(other) = conf
            .instances
            .iter()
            .find(|i| i.interface == inst.interface && i.vrid == inst.vrid && i.is_ipv6() == inst.is_ipv6())
        {
            return Err(p.err(
                s.line,
                format!(
                    "vrrp_instance {}: virtual_router_id {} on {} is already used by vrrp_instance {}",
                    inst.name, inst.vrid, inst.interface, other.name
                ),
            ));
        }
        conf.instances.push(inst);
    }
    // Cross references.
    for i in &conf.instances {
        for t in &i.track_scripts {
            if !conf.scripts.contains_key(&t.name) {
                return Err(
                    p.err(t.line, format!("vrrp_instance {}: track_script {:?} is not a vrrp_script", i.name, t.name))
                );
            }
        }
    }
    for g in &conf.sync_groups {
        for m in &g.members {
            if !conf.instances.iter().any(|i| &i.name == m) {
                return Err(p.err(g.line, format!("vrrp_sync_group {}: no vrrp_instance named {m:?}", g.name)));
            }
            if let Some(other) = conf.sync_groups.iter().find(|o| o.name != g.name && o.members.contains(m)) {
                return Err(
                    p.err(g.line, format!("vrrp_instance {m} is in vrrp_sync_group {} and {}", g.name, other.name))
                );
            }
        }
    }
    Ok((conf, p.warnings))
}

fn one_arg<'t>(p: &Parser<'_>, s: &Stmt<'t>) -> Result<&'t str, ConfError> {
    match s.args.as_slice() {
        [a] => Ok(a),
        [] => Err(p.err(s.line, format!("{} needs a value", s.key))),
        _ => Err(p.err(s.line, format!("{} takes one value, got {}", s.key, s.args.len()))),
    }
}

fn no_arg(p: &Parser<'_>, s: &Stmt<'_>) -> Result<(), ConfError> {
    if s.args.is_empty() { Ok(()) } else { Err(p.err(s.line, format!("{} takes no value", s.key))) }
}

/// The rest of the line as one command line for `/bin/sh -c`. keepalived's
/// usual form is one quoted string holding the command and its arguments
/// (`notify_master "/etc/ka.sh master"`), taken as it is; several words are
/// joined, re-quoting those that were quoted with spaces inside.
fn command(p: &Parser<'_>, s: &Stmt<'_>) -> Result<String, ConfError> {
    match s.args.as_slice() {
        [] => Err(p.err(s.line, format!("{} needs a command", s.key))),
        [one] => Ok(one.to_string()),
        many => Ok(many
            .iter()
            .map(|a| if a.contains(char::is_whitespace) { format!("\"{a}\"") } else { a.to_string() })
            .collect::<Vec<_>>()
            .join(" ")),
    }
}

fn int<T: TryFrom<i64>>(p: &Parser<'_>, line: usize, what: &str, v: &str, min: i64, max: i64) -> Result<T, ConfError> {
    let n: i64 = v.parse().map_err(|_| p.err(line, format!("{what}: {v:?} is not an integer")))?;
    if !(min..=max).contains(&n) {
        return Err(p.err(line, format!("{what}: {n} is outside {min}..={max}")));
    }
    T::try_from(n).map_err(|_| p.err(line, format!("{what}: {n} is out of range")))
}

/// Seconds, possibly fractional, to a duration in `min..=max` seconds.
fn seconds(p: &Parser<'_>, line: usize, what: &str, v: &str, min: f64, max: f64) -> Result<Duration, ConfError> {
    let f: f64 = v.parse().map_err(|_| p.err(line, format!("{what}: {v:?} is not a number of seconds")))?;
    if !f.is_finite() || f < min || f > max {
        return Err(p.err(line, format!("{what}: {v} is outside {min}..={max} seconds")));
    }
    Ok(Duration::from_secs_f64(f))
}

fn version(p: &Parser<'_>, s: &Stmt<'_>) -> Result<Version, ConfError> {
    match one_arg(p, s)? {
        "2" => Ok(Version::V2),
        "3" => Ok(Version::V3),
        v => Err(p.err(s.line, format!("{}: {v:?} is neither 2 nor 3", s.key))),
    }
}

/// A `vrrp_garp_*` / `garp_*` setting; `Ok(false)` if `key` is not one.
fn garp_setting(p: &Parser<'_>, s: &Stmt, key: &str, g: &mut GarpConfig) -> Result<bool, ConfError> {
    let day = 86_400.0;
    match key {
        "garp_master_delay" => {
            g.master_delay = seconds(p, s.line, s.key, one_arg(p, s)?, 0.0, day)?;
        }
        "garp_master_repeat" => g.master_repeat = int(p, s.line, s.key, one_arg(p, s)?, 0, 1000)?,
        "garp_master_refresh" => {
            let d = seconds(p, s.line, s.key, one_arg(p, s)?, 0.0, day)?;
            g.master_refresh = (!d.is_zero()).then_some(d);
        }
        "garp_master_refresh_repeat" => {
            g.master_refresh_repeat = int(p, s.line, s.key, one_arg(p, s)?, 1, 1000)?;
        }
        "garp_lower_prio_delay" => {
            g.lower_prio_delay = Some(seconds(p, s.line, s.key, one_arg(p, s)?, 0.0, day)?);
        }
        "garp_lower_prio_repeat" => g.lower_prio_repeat = Some(int(p, s.line, s.key, one_arg(p, s)?, 0, 1000)?),
        _ => return Ok(false),
    }
    Ok(true)
}

fn global(p: &mut Parser<'_>, s: &Stmt, g: &mut Global) -> Result<(), ConfError> {
    for c in s.block.iter().flatten() {
        match c.key {
            "router_id" => g.router_id = Some(one_arg(p, c)?.to_string()),
            "vrrp_version" => g.version = version(p, c)?,
            "vrrp_lower_prio_no_advert" => {
                g.lower_prio_no_advert = match c.args.first().copied() {
                    None | Some("true") | Some("on") | Some("yes") => true,
                    Some("false") | Some("off") | Some("no") => false,
                    Some(v) => return Err(p.err(c.line, format!("vrrp_lower_prio_no_advert: {v:?} is not a boolean"))),
                }
            }
            k if k.strip_prefix("vrrp_").is_some_and(|rest| rest.starts_with("garp_")) => {
                let rest = k.trim_start_matches("vrrp_");
                if !garp_setting(p, c, rest, &mut g.garp)? {
                    p.warn(c.line, format!("unsupported global_defs keyword {k:?} ignored"));
                }
            }
            k => p.warn(c.line, format!("unsupported global_defs keyword {k:?} ignored")),
        }
    }
    Ok(())
}

fn ip(p: &Parser<'_>, line: usize, what: &str, v: &str) -> Result<IpAddr, ConfError> {
    v.parse().map_err(|_| p.err(line, format!("{what}: {v:?} is not an IP address")))
}

fn tracks(p: &mut Parser<'_>, s: &Stmt<'_>) -> Result<Vec<TrackRef>, ConfError> {
    let mut out: Vec<TrackRef> = Vec::new();
    for c in s.block.iter().flatten() {
        let weight = match c.args.as_slice() {
            [] => None,
            [w, v] if *w == "weight" => {
                Some(int(p, c.line, "weight", v, -i64::from(MAX_WEIGHT), i64::from(MAX_WEIGHT))?)
            }
            [w, v, extra @ ..] if *w == "weight" => {
                p.warn(c.line, format!("{}: {:?} after the weight ignored", s.key, extra.join(" ")));
                Some(int(p, c.line, "weight", v, -i64::from(MAX_WEIGHT), i64::from(MAX_WEIGHT))?)
            }
            other => {
                return Err(p.err(c.line, format!("{}: expected `NAME [weight W]`, got {:?}", s.key, other.join(" "))));
            }
        };
        if out.iter().any(|t| t.name == c.key) {
            return Err(p.err(c.line, format!("{}: {} is listed twice", s.key, c.key)));
        }
        out.push(TrackRef { name: c.key.to_string(), weight, line: c.line });
    }
    Ok(out)
}

fn instance(p: &mut Parser<'_>, s: &Stmt, g: &Global) -> Result<InstanceConf, ConfError> {
    let name = match s.args.as_slice() {
        [n] => n.to_string(),
        _ => return Err(p.err(s.line, "vrrp_instance needs one name")),
    };
    let Some(block) = &s.block else {
        return Err(p.err(s.line, format!("vrrp_instance {name} needs a {{ ... }} block")));
    };
    let mut interface = None;
    let mut vrid = None;
    let mut version_set = None;
    let mut advert: Option<(f64, usize)> = None;
    let mut inst = InstanceConf {
        name: name.clone(),
        line: s.line,
        start_as: StartAs::Backup,
        interface: String::new(),
        vrid: 0,
        priority: 100,
        version: g.version,
        advert_interval_cs: 100,
        preempt: true,
        preempt_delay: Duration::ZERO,
        accept: false,
        unicast_src_ip: None,
        unicast_peers: Vec::new(),
        vips: Vec::new(),
        track_interfaces: Vec::new(),
        track_scripts: Vec::new(),
        track_primary: true,
        notify: Notify::default(),
        garp: g.garp.clone(),
        lower_prio_no_advert: g.lower_prio_no_advert,
    };
    let mut vip_block_line = None;
    for c in block {
        let key = c.key;
        match key {
            "state" => {
                inst.start_as = match one_arg(p, c)? {
                    "MASTER" => StartAs::Master,
                    "BACKUP" => StartAs::Backup,
                    v => return Err(p.err(c.line, format!("state: {v:?} is neither MASTER nor BACKUP"))),
                }
            }
            "interface" => interface = Some(one_arg(p, c)?.to_string()),
            "virtual_router_id" => vrid = Some(int::<u8>(p, c.line, key, one_arg(p, c)?, 1, 255)?),
            "priority" => inst.priority = int(p, c.line, key, one_arg(p, c)?, 1, 255)?,
            "advert_int" => {
                let v = one_arg(p, c)?;
                let f: f64 = v.parse().map_err(|_| p.err(c.line, format!("advert_int: {v:?} is not a number")))?;
                if !f.is_finite() || f <= 0.0 {
                    return Err(p.err(c.line, format!("advert_int: {v} must be positive")));
                }
                advert = Some((f, c.line));
            }
            "version" => version_set = Some(version(p, c)?),
            "nopreempt" => {
                no_arg(p, c)?;
                inst.preempt = false;
            }
            "preempt" => {
                no_arg(p, c)?;
                inst.preempt = true;
            }
            "preempt_delay" => inst.preempt_delay = seconds(p, c.line, key, one_arg(p, c)?, 0.0, 1000.0)?,
            "accept" => {
                no_arg(p, c)?;
                inst.accept = true;
            }
            "no_accept" => {
                no_arg(p, c)?;
                inst.accept = false;
            }
            "dont_track_primary" => {
                no_arg(p, c)?;
                inst.track_primary = false;
            }
            "unicast_src_ip" => inst.unicast_src_ip = Some(ip(p, c.line, key, one_arg(p, c)?)?),
            "unicast_peer" => {
                if let Some(l) = c.block.iter().flatten().find(|l| !l.args.is_empty()) {
                    // `ADDR min_ttl N` and friends: keepalived options we do not take.
                    return Err(p.err(l.line, format!("unicast_peer: options after {} are not supported", l.key)));
                }
                for (w, line) in c.words() {
                    let a = ip(p, line, "unicast_peer", w)?;
                    if inst.unicast_peers.contains(&a) {
                        return Err(p.err(line, format!("unicast_peer {a} is listed twice")));
                    }
                    inst.unicast_peers.push(a);
                }
            }
            "virtual_ipaddress" => {
                vip_block_line = Some(c.line);
                for l in c.block.iter().flatten() {
                    let v = vip(p, l)?;
                    if inst.vips.iter().any(|o| o.net.addr() == v.net.addr()) {
                        return Err(p.err(l.line, format!("virtual_ipaddress {} is listed twice", v.net.addr())));
                    }
                    inst.vips.push(v);
                }
            }
            "track_interface" => inst.track_interfaces = tracks(p, c)?,
            "track_script" => inst.track_scripts = tracks(p, c)?,
            "notify_master" => inst.notify.master = Some(command(p, c)?),
            "notify_backup" => inst.notify.backup = Some(command(p, c)?),
            "notify_fault" => inst.notify.fault = Some(command(p, c)?),
            "notify" => inst.notify.any = Some(command(p, c)?),
            k => {
                if !garp_setting(p, c, k, &mut inst.garp)? {
                    p.warn(c.line, format!("vrrp_instance {name}: unsupported keyword {k:?} ignored"));
                }
            }
        }
    }
    inst.interface = interface.ok_or_else(|| p.err(s.line, format!("vrrp_instance {name}: no interface")))?;
    inst.vrid = vrid.ok_or_else(|| p.err(s.line, format!("vrrp_instance {name}: no virtual_router_id")))?;
    if let Some(v) = version_set {
        inst.version = v;
    }
    if let Some((f, line)) = advert {
        let cs = (f * 100.0).round();
        match inst.version {
            Version::V2 => {
                if f.fract() != 0.0 || !(1.0..=255.0).contains(&f) {
                    return Err(p.err(
                        line,
                        format!("advert_int {f}: VRRP version 2 needs whole seconds 1..=255 (use version 3 for less)"),
                    ));
                }
            }
            Version::V3 => {
                if !(1.0..=4095.0).contains(&cs) {
                    return Err(p.err(line, format!("advert_int {f}: VRRP version 3 needs 0.01..=40.95 seconds")));
                }
                if (cs - f * 100.0).abs() > 1e-6 {
                    p.warn(line, format!("advert_int {f} rounded to {} s (centiseconds)", cs / 100.0));
                }
            }
        }
        inst.advert_interval_cs = cs as u16;
    }
    let Some(first) = inst.vips.first() else {
        return Err(p.err(vip_block_line.unwrap_or(s.line), format!("vrrp_instance {name}: no virtual_ipaddress")));
    };
    let v6 = first.net.addr().is_ipv6();
    if inst.vips.len() > 255 {
        return Err(p.err(vip_block_line.unwrap_or(s.line), "more than 255 virtual addresses"));
    }
    for v in &inst.vips {
        if v.net.addr().is_ipv6() != v6 {
            return Err(p.err(
                vip_block_line.unwrap_or(s.line),
                format!("vrrp_instance {name}: {} is not of the family of {}", v.net.addr(), first.net.addr()),
            ));
        }
    }
    if v6 && inst.version == Version::V2 {
        return Err(p.err(s.line, format!("vrrp_instance {name}: IPv6 needs version 3 (VRRPv2 is IPv4 only)")));
    }
    for a in inst.unicast_src_ip.iter().chain(&inst.unicast_peers) {
        if a.is_ipv6() != v6 {
            return Err(p.err(s.line, format!("vrrp_instance {name}: unicast address {a} is not of the VIPs' family")));
        }
    }
    if !inst.unicast_peers.is_empty() && inst.unicast_src_ip.is_none() {
        p.warn(
            s.line,
            format!("vrrp_instance {name}: unicast_peer without unicast_src_ip: the interface's address is used"),
        );
    }
    Ok(inst)
}

/// `ADDR[/PREFIX] [dev IF] [...]`
fn vip(p: &mut Parser<'_>, l: &Stmt<'_>) -> Result<Vip, ConfError> {
    let net: IpNet = match l.key.split_once('/') {
        Some(_) => {
            l.key.parse().map_err(|_| p.err(l.line, format!("virtual_ipaddress: {:?} is not ADDR/PREFIX", l.key)))?
        }
        None => IpNet::from(ip(p, l.line, "virtual_ipaddress", l.key)?),
    };
    let a = net.addr();
    if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
        return Err(p.err(l.line, format!("virtual_ipaddress: {a} is not a unicast address")));
    }
    let mut dev = None;
    let mut args = l.args.iter();
    while let Some(k) = args.next() {
        match *k {
            "dev" => match args.next() {
                Some(d) => dev = Some(d.to_string()),
                None => return Err(p.err(l.line, "virtual_ipaddress: `dev` needs an interface")),
            },
            other => {
                // label, scope, brd, ...: keepalived options we do not apply.
                let value = args.next().cloned().unwrap_or_default();
                p.warn(l.line, format!("virtual_ipaddress {a}: option {other} {value} ignored"));
            }
        }
    }
    Ok(Vip { net, dev })
}

fn script(p: &mut Parser<'_>, s: &Stmt<'_>) -> Result<ScriptConf, ConfError> {
    let name = match s.args.as_slice() {
        [n] => n.to_string(),
        _ => return Err(p.err(s.line, "vrrp_script needs one name")),
    };
    let mut cmd = None;
    let mut interval = Duration::from_secs(1);
    let mut timeout = None;
    let mut sc = ScriptConf {
        name: name.clone(),
        line: s.line,
        script: String::new(),
        interval,
        timeout: interval,
        weight: 0,
        fall: 1,
        rise: 1,
        init_fail: false,
    };
    for c in s.block.iter().flatten() {
        let key = c.key;
        match key {
            "script" => cmd = Some(command(p, c)?),
            "interval" => interval = seconds(p, c.line, key, one_arg(p, c)?, 0.01, 86_400.0)?,
            "timeout" => timeout = Some(seconds(p, c.line, key, one_arg(p, c)?, 0.01, 86_400.0)?),
            "weight" => {
                sc.weight = int(p, c.line, key, c.args.first().copied().unwrap_or(""), -254, 254)?;
                if c.args.len() > 1 {
                    p.warn(c.line, format!("vrrp_script {name}: {:?} after the weight ignored", c.args[1..].join(" ")));
                }
            }
            "fall" => sc.fall = int(p, c.line, key, one_arg(p, c)?, 1, 1000)?,
            "rise" => sc.rise = int(p, c.line, key, one_arg(p, c)?, 1, 1000)?,
            "init_fail" => {
                no_arg(p, c)?;
                sc.init_fail = true;
            }
            k => p.warn(c.line, format!("vrrp_script {name}: unsupported keyword {k:?} ignored")),
        }
    }
    sc.script = cmd.ok_or_else(|| p.err(s.line, format!("vrrp_script {name}: no script")))?;
    sc.interval = interval;
    sc.timeout = timeout.unwrap_or(interval);
    Ok(sc)
}

fn sync_group(p: &mut Parser<'_>, s: &Stmt<'_>) -> Result<SyncGroupConf, ConfError> {
    let name = match s.args.as_slice() {
        [n] => n.to_string(),
        _ => return Err(p.err(s.line, "vrrp_sync_group needs one name")),
    };
    let mut g = SyncGroupConf { name: name.clone(), line: s.line, members: Vec::new(), notify: Notify::default() };
    for c in s.block.iter().flatten() {
        match c.key {
            "group" => {
                for (w, line) in c.words() {
                    if g.members.iter().any(|m| m == w) {
                        return Err(p.err(line, format!("vrrp_sync_group {name}: {w} is listed twice")));
                    }
                    g.members.push(w.to_string());
                }
            }
            "notify_master" => g.notify.master = Some(command(p, c)?),
            "notify_backup" => g.notify.backup = Some(command(p, c)?),
            "notify_fault" => g.notify.fault = Some(command(p, c)?),
            "notify" => g.notify.any = Some(command(p, c)?),
            k => p.warn(c.line, format!("vrrp_sync_group {name}: unsupported keyword {k:?} ignored")),
        }
    }
    if g.members.is_empty() {
        return Err(p.err(s.line, format!("vrrp_sync_group {name}: empty group")));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
! a comment
global_defs {
    router_id node_a       # trailing comment
    vrrp_version 3
    vrrp_garp_master_delay 2
    vrrp_garp_master_repeat 3
    vrrp_garp_master_refresh 60
    notification_email { root@localhost }
}
vrrp_script chk_web {
    script "/usr/bin/curl -sf http://127.0.0.1/"
    interval 2
    timeout 1
    weight -20
    fall 3
    rise 2
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 0.1
    nopreempt
    preempt_delay 5
    accept
    unicast_src_ip 10.0.0.1
    unicast_peer {
        10.0.0.2
        10.0.0.3
    }
    virtual_ipaddress {
        10.0.0.100/24 dev eth0
        10.0.0.101
        10.0.1.100/24 dev eth1 label eth1:vip
    }
    track_interface {
        eth1 weight -10
        eth2
    }
    track_script {
        chk_web
    }
    notify_master "/etc/notify.sh master"
    notify_backup /etc/notify.sh backup
    notify_fault /etc/notify.sh fault
    notify /etc/notify-any.sh
    smtp_alert
}
vrrp_instance VI_2
{
    interface eth0
    virtual_router_id 52
    version 2
    advert_int 1
    virtual_ipaddress { 10.0.0.200 }
}
vrrp_sync_group G1 {
    group {
        VI_1
        VI_2
    }
    notify_master /etc/group.sh
}
"#;

    #[test]
    fn full_example() {
        let (c, w) = parse(FULL, "k.conf").unwrap();
        assert_eq!(c.global.router_id.as_deref(), Some("node_a"));
        assert_eq!(c.global.version, Version::V3);
        assert_eq!(c.global.garp.master_delay, Duration::from_secs(2));
        assert_eq!(c.global.garp.master_repeat, 3);
        assert_eq!(c.global.garp.master_refresh, Some(Duration::from_secs(60)));
        let s = &c.scripts["chk_web"];
        assert_eq!(s.script, "/usr/bin/curl -sf http://127.0.0.1/");
        assert_eq!(
            (s.interval, s.timeout, s.weight, s.fall, s.rise),
            (Duration::from_secs(2), Duration::from_secs(1), -20, 3, 2)
        );
        let i = &c.instances[0];
        assert_eq!(i.name, "VI_1");
        assert_eq!(i.start_as, StartAs::Master);
        assert_eq!((i.interface.as_str(), i.vrid, i.priority, i.advert_interval_cs), ("eth0", 51, 150, 10));
        assert!(!i.preempt && i.accept);
        assert_eq!(i.preempt_delay, Duration::from_secs(5));
        assert_eq!(i.unicast_src_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(i.unicast_peers.len(), 2);
        assert_eq!(i.vips[0], Vip { net: "10.0.0.100/24".parse().unwrap(), dev: Some("eth0".into()) });
        assert_eq!(i.vips[1], Vip { net: "10.0.0.101/32".parse().unwrap(), dev: None });
        assert_eq!(i.vips[2].dev.as_deref(), Some("eth1"));
        assert_eq!(
            i.track_interfaces.iter().map(|t| (t.name.as_str(), t.weight)).collect::<Vec<_>>(),
            vec![("eth1", Some(-10)), ("eth2", None)]
        );
        assert_eq!(i.track_scripts[0].name, "chk_web");
        assert_eq!(i.notify.master.as_deref(), Some("/etc/notify.sh master"));
        assert_eq!(i.notify.backup.as_deref(), Some("/etc/notify.sh backup"));
        assert_eq!(i.notify.any.as_deref(), Some("/etc/notify-any.sh"));
        assert_eq!(i.garp.master_repeat, 3, "instances inherit global_defs");
        let j = &c.instances[1];
        assert_eq!((j.version, j.advert_interval_cs, j.priority, j.preempt), (Version::V2, 100, 100, true));
        assert_eq!(c.sync_groups[0].members, vec!["VI_1", "VI_2"]);
        // Unsupported: notification_email, label, smtp_alert.
        let lines: Vec<usize> = w.iter().map(|w| w.line).collect();
        assert_eq!(lines.len(), 3, "{w:#?}");
        assert!(w.iter().all(|w| w.file == "k.conf"));
        assert!(w.iter().any(|w| w.message.contains("smtp_alert")));
        assert!(w.iter().any(|w| w.message.contains("notification_email")));
        assert!(w.iter().any(|w| w.message.contains("label")));
    }

    fn err(text: &str) -> ConfError {
        parse(text, "bad.conf").unwrap_err()
    }

    fn inst(body: &str) -> String {
        format!(
            "vrrp_instance V {{\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {{\n 10.0.0.9\n }}\n{body}\n}}\n"
        )
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let e = err("vrrp_instance V {\n interface eth0\n");
        assert_eq!((e.file.as_str(), e.line), ("bad.conf", 1));
        assert!(e.message.contains("never closed"), "{e}");
        let e = err("}\n");
        assert!(e.message.contains("without a matching"), "{e}");
        let e = err(&inst("priority 300"));
        assert_eq!(e.line, 7);
        assert!(e.message.contains("priority") && e.message.contains("300"), "{e}");
        assert!(err(&inst("advert_int 0.1")).message.contains("version 2"));
        assert!(err(&inst("version 3\nadvert_int 50")).message.contains("0.01..=40.95"));
        assert!(err(&inst("state PRIMARY")).message.contains("MASTER"));
        assert!(err(&inst("unicast_src_ip 10.0.0")).message.contains("not an IP"));
        assert!(err(&inst("track_script {\n nope\n}")).message.contains("not a vrrp_script"));
        assert!(
            err("vrrp_instance V {\n virtual_router_id 1\n virtual_ipaddress { 10.0.0.9 }\n}")
                .message
                .contains("no interface")
        );
        assert!(
            err("vrrp_instance V {\n interface e\n virtual_router_id 1\n}").message.contains("no virtual_ipaddress")
        );
        assert!(err(&format!("{}{}", inst(""), inst(""))).message.contains("twice"));
        assert!(err("vrrp_sync_group G {\n group { X }\n}").message.contains("no vrrp_instance"));
        let v6 = "vrrp_instance V {\n interface e\n virtual_router_id 1\n version 2\n virtual_ipaddress { fd00::1 }\n}";
        assert!(err(v6).message.contains("IPv6"), "{}", err(v6));
        let e = err(&inst("virtual_ipaddress {\n 10.0.0.1\n fd00::1\n}"));
        assert!(e.message.contains("family"), "{e}");
        assert_eq!(format!("{e}").split(':').next(), Some("bad.conf"));
    }

    #[test]
    fn braces_and_quotes_anywhere() {
        let (c, _) = parse(
            "vrrp_instance V{interface eth0\nvirtual_router_id 7\nvirtual_ipaddress{10.1.1.1/24 dev eth0}}\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.instances[0].vips[0].net.prefix_len(), 24);
        let (c, _) = parse(&inst("notify \"/bin/echo a b\" c"), "x").unwrap();
        assert_eq!(c.instances[0].notify.any.as_deref(), Some("\"/bin/echo a b\" c"));
    }

    #[test]
    fn warnings_for_unknown_top_level_blocks() {
        let (c, w) =
            parse("virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n weight 1\n }\n}\n", "lvs.conf").unwrap();
        assert!(c.instances.is_empty());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].line, 1);
        assert!(w[0].to_string().starts_with("lvs.conf:1: warning:"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = parse(&s, "p");
        }

        #[test]
        fn keepalived_like_tokens_never_panic(words in proptest::collection::vec(proptest::sample::select(vec![
            "{", "}", "\n", "vrrp_instance", "V", "interface", "eth0", "virtual_router_id", "1", "300", "-5",
            "virtual_ipaddress", "10.0.0.1", "10.0.0.1/33", "fd00::1", "dev", "priority", "advert_int", "0.1",
            "version", "3", "2", "track_script", "weight", "vrrp_script", "script", "\"", "#", "global_defs",
            "vrrp_sync_group", "group", "unicast_peer", "state", "MASTER", "nopreempt", "1e400", "NaN",
        ]), 0..80)) {
            let text = words.join(" ");
            let _ = parse(&text, "p");
        }
    }
}

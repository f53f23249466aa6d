//! `--config FILE` for the daemons (`controller`, `agent`, `replicator`):
//! a TOML file whose keys are the subcommand's long flags (`heartbeat_ms`
//! for `--heartbeat-ms`). The file's settings go before the command line's
//! flags, and a flag given both ways takes the command line's value. A key
//! that is no flag, a nested table, or a value the flag refuses is an error
//! naming FILE:LINE. `--check-config` validates, prints every setting with
//! where it came from (file, flag, environment, default) and exits.
//!
//! ```toml
//! # /etc/vipcast/agent.toml
//! chassis = "hv1"
//! underlay_ip = "172.31.0.1"
//! controller = "https://10.0.0.10:7600"
//! heartbeat_ms = 50
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The subcommands that take `--config`.
pub const DAEMONS: [&str; 3] = ["controller", "agent", "replicator"];

/// Where each synthesized flag came from: flag name -> (file, line).
#[derive(Debug, Default, Clone)]
pub struct Origins {
    pub file: Option<PathBuf>,
    lines: BTreeMap<String, usize>,
}

impl Origins {
    /// "FILE:LINE" for the key behind flag `--long`, if it came from the file.
    pub fn of(&self, long: &str) -> Option<String> {
        let file = self.file.as_ref()?;
        self.lines.get(long).map(|l| format!("{}:{l}", file.display()))
    }
}

/// What `expand` made of the command line.
#[derive(Debug, Default)]
pub struct Expanded {
    pub args: Vec<OsString>,
    pub origins: Origins,
    pub check: bool,
}

/// Takes `--config FILE` and `--check-config` out of a daemon's command
/// line and puts the file's settings, as flags, right after the subcommand.
/// Other command lines are returned unchanged.
pub fn expand(cmd: &Command, args: Vec<OsString>) -> Result<Expanded, String> {
    let Some(sub_name) = args.get(1).and_then(|a| a.to_str()).filter(|a| DAEMONS.contains(a)).map(str::to_string)
    else {
        return Ok(Expanded { args, ..Default::default() });
    };
    let Some(sub) = cmd.find_subcommand(&sub_name) else { return Ok(Expanded { args, ..Default::default() }) };
    let mut rest = Vec::new();
    let mut file: Option<PathBuf> = None;
    let mut check = false;
    let mut it = args.iter().skip(2);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config") => {
                let f = it.next().ok_or("--config needs a FILE")?;
                if file.replace(PathBuf::from(f)).is_some() {
                    return Err("--config given twice".into());
                }
            }
            Some(s) if s.starts_with("--config=") => {
                if file.replace(PathBuf::from(&s["--config=".len()..])).is_some() {
                    return Err("--config given twice".into());
                }
            }
            Some("--check-config") => check = true,
            // After `--`, nothing is ours.
            Some("--") => {
                rest.push(a.clone());
                rest.extend(it.by_ref().cloned());
            }
            _ => rest.push(a.clone()),
        }
    }
    let mut out: Vec<OsString> = args.iter().take(2).cloned().collect();
    let mut origins = Origins::default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (flags, mut lines) = flags_from(sub, &path, &text)?;
        out.extend(flags);
        // What the command line sets again is the command line's.
        for a in rest.iter().filter_map(|a| a.to_str()) {
            if let Some(long) = a.strip_prefix("--") {
                lines.remove(long.split('=').next().unwrap_or(long));
            }
        }
        origins = Origins { file: Some(path), lines };
    }
    out.extend(rest);
    Ok(Expanded { args: out, origins, check })
}

type Spanned<T> = toml::Spanned<T>;

/// The flags `text` (the file at `path`) stands for, and the line of each.
fn flags_from(sub: &Command, path: &Path, text: &str) -> Result<(Vec<OsString>, BTreeMap<String, usize>), String> {
    let line = |offset: usize| text.get(..offset).unwrap_or(text).matches('\n').count() + 1;
    let at = |offset: usize| format!("{}:{}", path.display(), line(offset));
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| at(s.start)).unwrap_or_else(|| path.display().to_string());
        format!("{line}: {}", e.message())
    })?;
    let mut flags = Vec::new();
    let mut lines = BTreeMap::new();
    for (key, value) in &table {
        let where_ = at(key.span().start);
        let long = key.get_ref().replace('_', "-");
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && !a.is_hide_set())
            .filter(|_| !matches!(long.as_str(), "help" | "version" | "config" | "check-config"))
            .ok_or_else(|| {
                let known: Vec<String> = sub
                    .get_arguments()
                    .filter(|a| !a.is_hide_set())
                    .filter_map(|a| a.get_long())
                    .filter(|l| !matches!(*l, "help" | "version" | "config" | "check-config"))
                    .map(|l| l.replace('-', "_"))
                    .collect();
                format!(
                    "{where_}: unknown key {:?} for vipcast {} (keys: {})",
                    key.get_ref(),
                    sub.get_name(),
                    known.join(", ")
                )
            })?;
        let flag = OsString::from(format!("--{long}"));
        let scalar = |v: &toml::Value| -> Result<String, String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                other => Err(format!(
                    "{where_}: {:?} takes a string, number or boolean, not {}",
                    key.get_ref(),
                    other.type_str()
                )),
            }
        };
        match (arg.get_action(), value.get_ref()) {
            (ArgAction::SetTrue, toml::Value::Boolean(b)) => {
                if *b {
                    flags.push(flag);
                }
            }
            (ArgAction::SetTrue, other) => {
                return Err(format!("{where_}: {:?} is true or false, not {}", key.get_ref(), other.type_str()));
            }
            (ArgAction::Append, toml::Value::Array(items)) => {
                for item in items {
                    flags.push(flag.clone());
                    flags.push(scalar(item)?.into());
                }
            }
            (_, v) => {
                flags.push(flag);
                flags.push(scalar(v)?.into());
            }
        }
        lines.insert(long, line(key.span().start));
    }
    Ok((flags, lines))
}

/// Every setting of the daemon subcommand in `m`, with where it came from:
/// what `--check-config` prints.
pub fn describe(sub: &Command, m: &ArgMatches, origins: &Origins) -> String {
    let mut out = String::new();
    for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
        let Some(long) = arg.get_long().filter(|l| !matches!(*l, "help" | "version" | "config" | "check-config"))
        else {
            continue;
        };
        let id = arg.get_id().as_str();
        let values: Vec<String> = match m.try_get_raw(id) {
            Ok(Some(v)) => v.map(|s| s.to_string_lossy().into_owned()).collect(),
            _ => continue,
        };
        let source = match m.value_source(id) {
            Some(ValueSource::CommandLine) => origins.of(long).unwrap_or_else(|| "flag".into()),
            Some(ValueSource::EnvVariable) => "environment".into(),
            Some(ValueSource::DefaultValue) => "default".into(),
            _ => "?".into(),
        };
        // As TOML would have it: numbers and booleans bare.
        let toml_value = |v: &String| {
            if v.parse::<f64>().is_ok() || v == "true" || v == "false" { v.clone() } else { format!("{v:?}") }
        };
        let shown = match values.as_slice() {
            [one] => toml_value(one),
            many => format!("[{}]", many.iter().map(toml_value).collect::<Vec<_>>().join(", ")),
        };
        out.push_str(&format!("{} = {shown}  # {source}\n", long.replace('-', "_")));
    }
    out
}

/// A clap error, with FILE:LINE added when the flag it names came from the file.
pub fn explain(e: &clap::Error, origins: &Origins) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let ContextValue::String(arg) = e.get(ContextKind::InvalidArg)? else { return None };
    let long = arg.trim_start_matches("--").split([' ', '=', '<']).next()?;
    origins.of(long).map(|at| format!("{at}: the value of {:?} is refused", long.replace('-', "_")))
}

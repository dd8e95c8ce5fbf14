//! A small command-line flag parser: `--name value`, `--name=value` and bare `--switch`.

use std::collections::HashMap;
use std::str::FromStr;

/// Parsed flags of one subcommand.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
    switches: Vec<String>,
}

impl Args {
    /// Parses `args`; `switches` names the flags that take no value. Unknown flags are errors
    /// when `known` does not list them.
    pub fn parse(args: &[String], known: &[&str], switches: &[&str]) -> Result<Args, String> {
        let mut out = Args::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            if !known.contains(&name) && !switches.contains(&name) {
                return Err(format!("unknown flag --{name}"));
            }
            if switches.contains(&name) {
                match inline.as_deref() {
                    None | Some("true") => out.switches.push(name.to_string()),
                    Some("false") => {}
                    Some(other) => return Err(format!("--{name} takes no value, got {other:?}")),
                }
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("--{name} needs a value"))?,
            };
            out.values.insert(name.to_string(), value);
        }
        Ok(out)
    }

    /// Whether the switch was given.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// The raw value of a flag.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A required flag.
    pub fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("--{name} is required"))
    }

    /// A parsed flag, or `default` when absent.
    pub fn parsed<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: cannot parse {v:?}")),
        }
    }

    /// A comma-separated list flag, or `default` when absent.
    pub fn list(&self, name: &str, default: &[&str]) -> Vec<String> {
        match self.get(name) {
            None => default.iter().map(|s| s.to_string()).collect(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_switches_and_errors() {
        let a = Args::parse(
            &strings(&["--rpc", "unary", "--payload=4096", "--json"]),
            &["rpc", "payload"],
            &["json"],
        )
        .unwrap();
        assert_eq!(a.get("rpc"), Some("unary"));
        assert_eq!(a.parsed("payload", 0usize).unwrap(), 4096);
        assert!(a.switch("json"));
        assert_eq!(a.list("missing", &["x", "y"]), ["x", "y"]);
        assert!(Args::parse(&strings(&["--nope"]), &["rpc"], &[]).is_err());
        assert!(Args::parse(&strings(&["--rpc"]), &["rpc"], &[]).is_err());
        assert!(Args::parse(&strings(&["stray"]), &["rpc"], &[]).is_err());
        let bad = Args::parse(&strings(&["--payload", "x"]), &["payload"], &[]).unwrap();
        assert!(bad.parsed("payload", 0usize).is_err());
    }
}

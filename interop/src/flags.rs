//! Command-line flags in the style every gRPC interop binary takes: `--name=value`,
//! `--name value`, and `--name` alone for a true boolean.

use std::collections::BTreeMap;

/// Parsed flags: name (without dashes) to value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags(BTreeMap<String, String>);

impl Flags {
    /// Parses `args` (without the program name), accepting only flags named in `known`.
    /// `booleans` may appear without a value.
    pub fn parse(args: &[String], known: &[&str], booleans: &[&str]) -> Result<Flags, String> {
        let mut flags = BTreeMap::new();
        let mut args = args.iter().peekable();
        while let Some(arg) = args.next() {
            let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, value.to_string()),
                None if booleans.contains(&body) => {
                    let explicit = args.peek().is_some_and(|next| parse_bool(next).is_ok());
                    let value = if explicit {
                        args.next().cloned().unwrap_or_default()
                    } else {
                        "true".to_string()
                    };
                    (body, value)
                }
                None => match args.next() {
                    Some(value) => (body, value.clone()),
                    None => return Err(format!("--{body} needs a value")),
                },
            };
            if !known.contains(&name) {
                return Err(format!("unknown flag --{name}"));
            }
            flags.insert(name.to_string(), value);
        }
        Ok(Flags(flags))
    }

    /// Whether `args` ask for the usage (`--help`, `-help` or `-h`), which is printed before
    /// anything is parsed.
    pub fn wants_help(args: &[String]) -> bool {
        args.iter()
            .any(|a| matches!(a.as_str(), "--help" | "-help" | "-h"))
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A boolean flag: `true`/`false`/`1`/`0`; `default` when absent.
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, String> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => parse_bool(value)
                .map_err(|()| format!("--{name} must be true or false, not {value:?}")),
        }
    }

    /// A TCP port; required.
    pub fn port(&self, name: &str) -> Result<u16, String> {
        let value = self
            .get(name)
            .ok_or_else(|| format!("--{name} is required"))?;
        value
            .parse::<u16>()
            .map_err(|_| format!("--{name} must be a port number, not {value:?}"))
    }
}

fn parse_bool(value: &str) -> Result<bool, ()> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const KNOWN: &[&str] = &["port", "use_tls", "test_case"];

    #[test]
    fn forms() {
        let flags = Flags::parse(
            &args(&["--port=8080", "--test_case", "empty_unary", "--use_tls"]),
            KNOWN,
            &["use_tls"],
        )
        .unwrap();
        assert_eq!(flags.port("port"), Ok(8080));
        assert_eq!(flags.get("test_case"), Some("empty_unary"));
        assert_eq!(flags.bool("use_tls", false), Ok(true));

        let flags = Flags::parse(&args(&["--use_tls", "false"]), KNOWN, &["use_tls"]).unwrap();
        assert_eq!(flags.bool("use_tls", true), Ok(false));
        let flags = Flags::parse(&args(&["-use_tls=0"]), KNOWN, &["use_tls"]).unwrap();
        assert_eq!(flags.bool("use_tls", true), Ok(false));
    }

    #[test]
    fn help_is_asked_for_anywhere() {
        assert!(Flags::wants_help(&args(&["--help"])));
        assert!(Flags::wants_help(&args(&["--port=1", "-h"])));
        assert!(!Flags::wants_help(&args(&["--port=1"])));
    }

    #[test]
    fn errors() {
        assert!(Flags::parse(&args(&["--nope=1"]), KNOWN, &[]).is_err());
        assert!(Flags::parse(&args(&["port"]), KNOWN, &[]).is_err());
        assert!(Flags::parse(&args(&["--port"]), KNOWN, &[]).is_err());
        let flags = Flags::parse(&args(&["--port=x", "--use_tls=maybe"]), KNOWN, &[]).unwrap();
        assert!(flags.port("port").is_err());
        assert!(flags.bool("use_tls", false).is_err());
        assert!(Flags::default().port("port").is_err());
    }
}

//! The service config (gRPC's `service_config.proto` in its JSON form, gRFC A6 for retries
//! and hedging): per-method timeouts, wait-for-ready, message size limits, retry or hedging
//! policies, retry throttling and the load-balancing policy.
//!
//! Parsed once when the channel is built; a call looks its method up by path. Every field is
//! checked as grpc-go and C-core check it, and a bad one is named in the error
//! (`methodConfig[1].retryPolicy.maxAttempts: ...`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::balance::LbPolicy;
use crate::status::{Code, Status};

/// gRFC A6: attempts above this are cut to it, whatever the config says.
pub(crate) const MAX_ATTEMPTS_CAP: u32 = 5;

/// A parsed service config.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceConfig {
    /// The first policy of `loadBalancingConfig` this channel knows (or
    /// `loadBalancingPolicy`), if any.
    pub(crate) lb_policy: Option<LbPolicy>,
    /// pick_first's `shuffleAddressList` (gRFC A62): shuffle each resolved address list, so
    /// clients spread over the servers instead of all taking the first.
    pub(crate) shuffle_address_list: bool,
    /// `retryThrottling`.
    pub(crate) throttling: Option<ThrottlingConfig>,
    /// `healthCheckConfig.serviceName`.
    pub(crate) health_check_service: Option<String>,
    methods: MethodTable,
}

/// The method configs, by the names they match.
#[derive(Debug, Clone, Default)]
struct MethodTable {
    /// `service/method` → config.
    exact: HashMap<String, Arc<MethodConfig>>,
    /// `service` → config for its methods without one of their own.
    services: HashMap<String, Arc<MethodConfig>>,
    /// The `{}` name: every method without a more specific config.
    default: Option<Arc<MethodConfig>>,
}

/// What the service config says about one method.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct MethodConfig {
    pub(crate) timeout: Option<Duration>,
    pub(crate) wait_for_ready: Option<bool>,
    pub(crate) max_request_bytes: Option<usize>,
    pub(crate) max_response_bytes: Option<usize>,
    pub(crate) policy: Option<AttemptPolicy>,
}

/// How a method's call is attempted more than once.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AttemptPolicy {
    /// Try again after a failure with a retryable code.
    Retry(RetryPolicy),
    /// Send more attempts after a delay without waiting for the first to fail.
    Hedging(HedgingPolicy),
}

/// `retryPolicy`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first included: 2 to [`MAX_ATTEMPTS_CAP`].
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) backoff_multiplier: f64,
    pub(crate) retryable_codes: CodeSet,
}

/// `hedgingPolicy`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HedgingPolicy {
    /// Attempts in all, the first included: 2 to [`MAX_ATTEMPTS_CAP`].
    pub(crate) max_attempts: u32,
    /// Time between starting one attempt and the next.
    pub(crate) delay: Duration,
    /// Codes after which the other attempts go on (any other code ends the call).
    pub(crate) non_fatal_codes: CodeSet,
}

/// `retryThrottling`: a token bucket per channel (gRFC A6), in thousandths of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThrottlingConfig {
    pub(crate) max_milli_tokens: u64,
    pub(crate) milli_token_ratio: u64,
}

/// A set of status codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CodeSet(u32);

impl CodeSet {
    pub(crate) fn contains(self, code: Code) -> bool {
        self.0 & (1 << code.as_i32()) != 0
    }

    fn insert(&mut self, code: Code) {
        self.0 |= 1 << code.as_i32();
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl ServiceConfig {
    /// Parses and checks a service config in JSON. A bad one is INVALID_ARGUMENT naming the
    /// field and what is wrong with it.
    pub(crate) fn parse(json: &str) -> Result<ServiceConfig, Status> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            Status::invalid_argument(format!("invalid service config: not JSON: {e}"))
        })?;
        parse_config(&value)
            .map_err(|e| Status::invalid_argument(format!("invalid service config: {e}")))
    }

    /// The config of the method at `path` (`/service/method`): its own, else its service's,
    /// else the default, if any.
    pub(crate) fn method(&self, path: &str) -> Option<&Arc<MethodConfig>> {
        let table = &self.methods;
        let name = path.strip_prefix('/').unwrap_or(path);
        if let Some(config) = table.exact.get(name) {
            return Some(config);
        }
        let service = name.split_once('/').map_or(name, |(service, _)| service);
        table.services.get(service).or(table.default.as_ref())
    }
}

/// A problem at a field: `path: message`.
type Failure = String;

fn parse_config(value: &Value) -> Result<ServiceConfig, Failure> {
    let top = object(value, "the service config")?;
    let mut config = ServiceConfig::default();
    if let Some(lb) = top.get("loadBalancingConfig") {
        (config.lb_policy, config.shuffle_address_list) = lb_config(lb)?;
    }
    if config.lb_policy.is_none() {
        if let Some(policy) = top.get("loadBalancingPolicy") {
            let name = string(policy, "loadBalancingPolicy")?;
            config.lb_policy = Some(lb_by_name(&name.to_ascii_lowercase()).ok_or_else(|| {
                format!("loadBalancingPolicy: unknown policy {name:?} (pick_first or round_robin)")
            })?);
        }
    }
    if let Some(methods) = top.get("methodConfig") {
        let list = array(methods, "methodConfig")?;
        for (i, entry) in list.iter().enumerate() {
            method_entry(entry, &format!("methodConfig[{i}]"), &mut config.methods)?;
        }
    }
    if let Some(throttling) = top.get("retryThrottling") {
        config.throttling = Some(throttling_config(throttling)?);
    }
    if let Some(health) = top.get("healthCheckConfig") {
        let health = object(health, "healthCheckConfig")?;
        if let Some(name) = health.get("serviceName") {
            config.health_check_service = Some(string(name, "healthCheckConfig.serviceName")?);
        }
    }
    Ok(config)
}

fn lb_by_name(name: &str) -> Option<LbPolicy> {
    match name {
        "pick_first" => Some(LbPolicy::PickFirst),
        "round_robin" => Some(LbPolicy::RoundRobin),
        _ => None,
    }
}

/// `loadBalancingConfig`: a list of `{ "name": {config} }`, the first known one wins; a list
/// with none this channel knows is an error, as in grpc-go.
/// The first known policy of a `loadBalancingConfig` list, and pick_first's
/// `shuffleAddressList`.
fn lb_config(value: &Value) -> Result<(Option<LbPolicy>, bool), Failure> {
    let list = array(value, "loadBalancingConfig")?;
    let mut names = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let field = format!("loadBalancingConfig[{i}]");
        let entry = object(entry, &field)?;
        if entry.len() != 1 {
            return Err(format!(
                "{field}: must have exactly one policy name as its key"
            ));
        }
        let (name, config) = entry.iter().next().expect("one entry");
        let config = object(config, &format!("{field}.{name}"))?;
        if let Some(policy) = lb_by_name(name) {
            let shuffle = match (&policy, config.get("shuffleAddressList")) {
                (LbPolicy::PickFirst, Some(v)) => {
                    boolean(v, &format!("{field}.pick_first.shuffleAddressList"))?
                }
                _ => false,
            };
            return Ok((Some(policy), shuffle));
        }
        names.push(name.clone());
    }
    if names.is_empty() {
        return Ok((None, false));
    }
    Err(format!(
        "loadBalancingConfig: no supported policy in {names:?} (pick_first or round_robin)"
    ))
}

fn method_entry(value: &Value, field: &str, table: &mut MethodTable) -> Result<(), Failure> {
    let entry = object(value, field)?;
    let mut config = MethodConfig::default();
    if let Some(v) = entry.get("timeout") {
        config.timeout = Some(duration(v, &format!("{field}.timeout"))?);
    }
    if let Some(v) = entry.get("waitForReady") {
        config.wait_for_ready = Some(boolean(v, &format!("{field}.waitForReady"))?);
    }
    if let Some(v) = entry.get("maxRequestMessageBytes") {
        config.max_request_bytes = Some(size(v, &format!("{field}.maxRequestMessageBytes"))?);
    }
    if let Some(v) = entry.get("maxResponseMessageBytes") {
        config.max_response_bytes = Some(size(v, &format!("{field}.maxResponseMessageBytes"))?);
    }
    match (entry.get("retryPolicy"), entry.get("hedgingPolicy")) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{field}: retryPolicy and hedgingPolicy cannot both be set"
            ));
        }
        (Some(retry), None) => {
            config.policy = Some(AttemptPolicy::Retry(retry_policy(
                retry,
                &format!("{field}.retryPolicy"),
            )?));
        }
        (None, Some(hedging)) => {
            config.policy = Some(AttemptPolicy::Hedging(hedging_policy(
                hedging,
                &format!("{field}.hedgingPolicy"),
            )?));
        }
        (None, None) => {}
    }
    let config = Arc::new(config);
    let Some(names) = entry.get("name") else {
        // A config that names no method applies to none.
        return Ok(());
    };
    for (i, name) in array(names, &format!("{field}.name"))?.iter().enumerate() {
        let at = format!("{field}.name[{i}]");
        let name = object(name, &at)?;
        let service = match name.get("service") {
            Some(v) => string(v, &format!("{at}.service"))?,
            None => String::new(),
        };
        let method = match name.get("method") {
            Some(v) => string(v, &format!("{at}.method"))?,
            None => String::new(),
        };
        let slot = match (service.is_empty(), method.is_empty()) {
            (true, false) => {
                return Err(format!("{at}: a method needs its service"));
            }
            (true, true) => {
                if table.default.is_some() {
                    return Err(format!("{at}: a second default (empty) name"));
                }
                table.default = Some(config.clone());
                continue;
            }
            (false, true) => table.services.entry(service.clone()),
            (false, false) => table.exact.entry(format!("{service}/{method}")),
        };
        match slot {
            Entry::Occupied(_) => {
                let what = if method.is_empty() {
                    service
                } else {
                    format!("{service}/{method}")
                };
                return Err(format!("{at}: {what} is named by two method configs"));
            }
            Entry::Vacant(slot) => {
                slot.insert(config.clone());
            }
        }
    }
    Ok(())
}

fn retry_policy(value: &Value, field: &str) -> Result<RetryPolicy, Failure> {
    let policy = object(value, field)?;
    let max_attempts = attempts(required(policy, "maxAttempts", field)?, field)?;
    let initial_backoff = positive_duration(policy, "initialBackoff", field)?;
    let max_backoff = positive_duration(policy, "maxBackoff", field)?;
    let multiplier_field = format!("{field}.backoffMultiplier");
    let backoff_multiplier = required(policy, "backoffMultiplier", field)?
        .as_f64()
        .filter(|m| m.is_finite() && *m > 0.0)
        .ok_or_else(|| format!("{multiplier_field}: must be a number above 0"))?;
    let codes_field = format!("{field}.retryableStatusCodes");
    let retryable_codes = code_set(
        required(policy, "retryableStatusCodes", field)?,
        &codes_field,
    )?;
    if retryable_codes.is_empty() {
        return Err(format!("{codes_field}: must name at least one code"));
    }
    Ok(RetryPolicy {
        max_attempts,
        initial_backoff,
        max_backoff,
        backoff_multiplier,
        retryable_codes,
    })
}

fn hedging_policy(value: &Value, field: &str) -> Result<HedgingPolicy, Failure> {
    let policy = object(value, field)?;
    let max_attempts = attempts(required(policy, "maxAttempts", field)?, field)?;
    let delay = match policy.get("hedgingDelay") {
        Some(v) => duration(v, &format!("{field}.hedgingDelay"))?,
        None => Duration::ZERO,
    };
    let non_fatal_codes = match policy.get("nonFatalStatusCodes") {
        Some(v) => code_set(v, &format!("{field}.nonFatalStatusCodes"))?,
        None => CodeSet::default(),
    };
    Ok(HedgingPolicy {
        max_attempts,
        delay,
        non_fatal_codes,
    })
}

fn throttling_config(value: &Value) -> Result<ThrottlingConfig, Failure> {
    let field = "retryThrottling";
    let throttling = object(value, field)?;
    let max_tokens = required(throttling, "maxTokens", field)?;
    let max_tokens = integer(max_tokens)
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| format!("{field}.maxTokens: must be an integer from 1 to 1000"))?;
    let ratio = required(throttling, "tokenRatio", field)?
        .as_f64()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("{field}.tokenRatio: must be a number above 0"))?;
    // A6: the ratio keeps three decimal places.
    let milli_token_ratio = (ratio * 1000.0).floor() as u64;
    if milli_token_ratio == 0 {
        return Err(format!("{field}.tokenRatio: must be at least 0.001"));
    }
    Ok(ThrottlingConfig {
        max_milli_tokens: max_tokens as u64 * 1000,
        milli_token_ratio,
    })
}

/// `maxAttempts`: an integer of at least 2, cut to [`MAX_ATTEMPTS_CAP`].
fn attempts(value: &Value, field: &str) -> Result<u32, Failure> {
    match integer(value) {
        Some(n) if n >= 2 => Ok(n.min(i64::from(MAX_ATTEMPTS_CAP)) as u32),
        _ => Err(format!(
            "{field}.maxAttempts: must be an integer of at least 2, not {value}"
        )),
    }
}

fn positive_duration(
    object: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Duration, Failure> {
    let at = format!("{field}.{key}");
    let d = duration(required(object, key, field)?, &at)?;
    if d.is_zero() {
        return Err(format!("{at}: must be above 0"));
    }
    Ok(d)
}

fn code_set(value: &Value, field: &str) -> Result<CodeSet, Failure> {
    let mut set = CodeSet::default();
    for (i, code) in array(value, field)?.iter().enumerate() {
        let parsed = match code {
            Value::String(name) => code_by_name(name),
            Value::Number(_) => integer(code)
                .filter(|n| (0..=16).contains(n))
                .map(|n| Code::from_i32(n as i32)),
            _ => None,
        };
        let code = parsed.ok_or_else(|| {
            format!("{field}[{i}]: {code} is not a status code (a name such as \"UNAVAILABLE\" or 0 to 16)")
        })?;
        if code == Code::Ok {
            return Err(format!("{field}[{i}]: OK is not a failure"));
        }
        set.insert(code);
    }
    Ok(set)
}

fn code_by_name(name: &str) -> Option<Code> {
    (0..=16)
        .map(Code::from_i32)
        .find(|code| code.name().eq_ignore_ascii_case(name))
}

/// A protobuf JSON duration: `"1.5s"`, decimal seconds with up to nine fractional digits;
/// `".1s"` too, as gRFC A6's own examples write it.
fn duration(value: &Value, field: &str) -> Result<Duration, Failure> {
    let bad = || format!("{field}: {value} is not a duration such as \"1.5s\"");
    let text = value.as_str().ok_or_else(bad)?;
    let seconds = text.strip_suffix('s').ok_or_else(bad)?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !digits(whole)
        || !digits(fraction)
        || fraction.len() > 9
    {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().map_err(|_| bad())?
    };
    // protobuf's Duration stops at 10,000 years.
    if whole > 315_576_000_000 {
        return Err(format!(
            "{field}: {text} is longer than a protobuf Duration allows"
        ));
    }
    Ok(Duration::new(whole, nanos))
}

/// A byte count: a non-negative integer, as a JSON number or string (protobuf JSON writes
/// 64-bit integers as strings).
fn size(value: &Value, field: &str) -> Result<usize, Failure> {
    integer(value)
        .filter(|n| *n >= 0)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{field}: must be a non-negative integer, not {value}"))
}

/// An integer as a JSON number without a fraction or as a decimal string.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn required<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<&'a Value, Failure> {
    object
        .get(key)
        .ok_or_else(|| format!("{field}.{key}: required"))
}

fn object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, Failure> {
    value
        .as_object()
        .ok_or_else(|| format!("{field}: must be a JSON object, not {value}"))
}

fn array<'a>(value: &'a Value, field: &str) -> Result<&'a Vec<Value>, Failure> {
    value
        .as_array()
        .ok_or_else(|| format!("{field}: must be a JSON array, not {value}"))
}

fn string(value: &Value, field: &str) -> Result<String, Failure> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{field}: must be a string, not {value}"))
}

fn boolean(value: &Value, field: &str) -> Result<bool, Failure> {
    value
        .as_bool()
        .ok_or_else(|| format!("{field}: must be true or false, not {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
        "loadBalancingConfig": [{"weighted_target_experimental": {}}, {"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": "pkg.Echo", "method": "Say"}],
                "timeout": "1.5s",
                "waitForReady": true,
                "maxRequestMessageBytes": 1024,
                "maxResponseMessageBytes": "2048",
                "retryPolicy": {
                    "maxAttempts": 9,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "resource_exhausted", 10]
                }
            },
            {
                "name": [{"service": "pkg.Echo"}],
                "hedgingPolicy": {
                    "maxAttempts": 3,
                    "hedgingDelay": "0.05s",
                    "nonFatalStatusCodes": ["UNAVAILABLE"]
                }
            },
            {"name": [{}], "timeout": "30s"}
        ],
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1234},
        "healthCheckConfig": {"serviceName": "pkg.Echo"}
    }"#;

    #[test]
    fn a_full_config_parses() {
        let config = ServiceConfig::parse(FULL).unwrap();
        assert!(matches!(config.lb_policy, Some(LbPolicy::RoundRobin)));
        assert_eq!(
            config.throttling,
            Some(ThrottlingConfig {
                max_milli_tokens: 10_000,
                milli_token_ratio: 123
            })
        );
        assert_eq!(config.health_check_service.as_deref(), Some("pkg.Echo"));

        let say = config.method("/pkg.Echo/Say").unwrap();
        assert_eq!(say.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(say.wait_for_ready, Some(true));
        assert_eq!(
            (say.max_request_bytes, say.max_response_bytes),
            (Some(1024), Some(2048))
        );
        let Some(AttemptPolicy::Retry(retry)) = &say.policy else {
            panic!("{say:?}");
        };
        assert_eq!(retry.max_attempts, MAX_ATTEMPTS_CAP);
        assert_eq!(retry.initial_backoff, Duration::from_millis(100));
        assert!(retry.retryable_codes.contains(Code::Unavailable));
        assert!(retry.retryable_codes.contains(Code::ResourceExhausted));
        assert!(retry.retryable_codes.contains(Code::Aborted));
        assert!(!retry.retryable_codes.contains(Code::Internal));

        let other = config.method("/pkg.Echo/Other").unwrap();
        let Some(AttemptPolicy::Hedging(hedging)) = &other.policy else {
            panic!("{other:?}");
        };
        assert_eq!(hedging.max_attempts, 3);
        assert_eq!(hedging.delay, Duration::from_millis(50));

        let default = config.method("/other.Svc/M").unwrap();
        assert_eq!(default.timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn without_a_default_unnamed_methods_have_no_config() {
        let config = ServiceConfig::parse(
            r#"{"methodConfig": [{"name": [{"service": "a.B"}], "timeout": "1s"}]}"#,
        )
        .unwrap();
        assert!(config.method("/a.B/C").is_some());
        assert!(config.method("/a.X/C").is_none());
        assert!(
            ServiceConfig::parse("{}")
                .unwrap()
                .method("/a.B/C")
                .is_none()
        );
    }

    #[test]
    fn durations_follow_protobuf_json() {
        let ok = |s: &str| duration(&Value::String(s.into()), "f").unwrap();
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
        assert_eq!(ok("2.5s"), Duration::from_millis(2500));
        assert_eq!(ok(".1s"), Duration::from_millis(100));
        for bad in [
            "1",
            "-1s",
            "1.s5",
            "s",
            ".s",
            "1.0000000001s",
            "1e3s",
            " 1s",
            "1m",
        ] {
            assert!(duration(&Value::String(bad.into()), "f").is_err(), "{bad}");
        }
        assert!(duration(&serde_json::json!(1), "f").is_err());
    }

    /// Each malformed field is refused with INVALID_ARGUMENT naming it.
    #[test]
    fn every_bad_field_is_named() {
        let retry = |policy: &str| {
            format!(r#"{{"methodConfig": [{{"name": [{{}}], "retryPolicy": {policy}}}]}}"#)
        };
        let good_retry = r#""initialBackoff": "1s", "maxBackoff": "2s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]"#;
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not JSON"),
            ("[]".into(), "the service config: must be a JSON object"),
            (r#"{"methodConfig": {}}"#.into(), "methodConfig: must be a JSON array"),
            (
                r#"{"methodConfig": [{"name": [{"method": "M"}]}]}"#.into(),
                "methodConfig[0].name[0]: a method needs its service",
            ),
            (
                r#"{"methodConfig": [{"name": [{}]}, {"name": [{}]}]}"#.into(),
                "methodConfig[1].name[0]: a second default",
            ),
            (
                r#"{"methodConfig": [{"name": [{"service": "a"}, {"service": "a"}]}]}"#.into(),
                "methodConfig[0].name[1]: a is named by two method configs",
            ),
            (
                r#"{"methodConfig": [{"name": [{"service": 5}]}]}"#.into(),
                "methodConfig[0].name[0].service: must be a string",
            ),
            (
                r#"{"methodConfig": [{"timeout": "soon"}]}"#.into(),
                "methodConfig[0].timeout: \"soon\" is not a duration",
            ),
            (
                r#"{"methodConfig": [{"waitForReady": "yes"}]}"#.into(),
                "methodConfig[0].waitForReady: must be true or false",
            ),
            (
                r#"{"methodConfig": [{"maxRequestMessageBytes": -1}]}"#.into(),
                "methodConfig[0].maxRequestMessageBytes: must be a non-negative integer",
            ),
            (
                r#"{"methodConfig": [{"maxResponseMessageBytes": 1.5}]}"#.into(),
                "methodConfig[0].maxResponseMessageBytes: must be a non-negative integer",
            ),
            (
                r#"{"methodConfig": [{"retryPolicy": {}, "hedgingPolicy": {}}]}"#.into(),
                "methodConfig[0]: retryPolicy and hedgingPolicy cannot both be set",
            ),
            (
                retry(&format!(r#"{{"maxAttempts": 1, {good_retry}}}"#)),
                "methodConfig[0].retryPolicy.maxAttempts: must be an integer of at least 2",
            ),
            (
                retry(r#"{"maxAttempts": 2}"#),
                "methodConfig[0].retryPolicy.initialBackoff: required",
            ),
            (
                retry(r#"{"maxAttempts": 2, "initialBackoff": "0s"}"#),
                "methodConfig[0].retryPolicy.initialBackoff: must be above 0",
            ),
            (
                retry(r#"{"maxAttempts": 2, "initialBackoff": "1s"}"#),
                "methodConfig[0].retryPolicy.maxBackoff: required",
            ),
            (
                retry(
                    r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 0}"#,
                ),
                "methodConfig[0].retryPolicy.backoffMultiplier: must be a number above 0",
            ),
            (
                retry(
                    r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": []}"#,
                ),
                "methodConfig[0].retryPolicy.retryableStatusCodes: must name at least one code",
            ),
            (
                retry(
                    r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["SOMETIMES"]}"#,
                ),
                "methodConfig[0].retryPolicy.retryableStatusCodes[0]: \"SOMETIMES\" is not a status code",
            ),
            (
                retry(
                    r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": [17]}"#,
                ),
                "methodConfig[0].retryPolicy.retryableStatusCodes[0]: 17 is not a status code",
            ),
            (
                retry(
                    r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["OK"]}"#,
                ),
                "methodConfig[0].retryPolicy.retryableStatusCodes[0]: OK is not a failure",
            ),
            (
                r#"{"methodConfig": [{"hedgingPolicy": {"maxAttempts": "many"}}]}"#.into(),
                "methodConfig[0].hedgingPolicy.maxAttempts: must be an integer of at least 2",
            ),
            (
                r#"{"methodConfig": [{"hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": 1}}]}"#
                    .into(),
                "methodConfig[0].hedgingPolicy.hedgingDelay: 1 is not a duration",
            ),
            (
                r#"{"methodConfig": [{"hedgingPolicy": {"maxAttempts": 2, "nonFatalStatusCodes": "UNAVAILABLE"}}]}"#
                    .into(),
                "methodConfig[0].hedgingPolicy.nonFatalStatusCodes: must be a JSON array",
            ),
            (
                r#"{"retryThrottling": {"maxTokens": 0, "tokenRatio": 1}}"#.into(),
                "retryThrottling.maxTokens: must be an integer from 1 to 1000",
            ),
            (
                r#"{"retryThrottling": {"maxTokens": 1001, "tokenRatio": 1}}"#.into(),
                "retryThrottling.maxTokens: must be an integer from 1 to 1000",
            ),
            (
                r#"{"retryThrottling": {"maxTokens": 10}}"#.into(),
                "retryThrottling.tokenRatio: required",
            ),
            (
                r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.0001}}"#.into(),
                "retryThrottling.tokenRatio: must be at least 0.001",
            ),
            (
                r#"{"loadBalancingConfig": [{"grpclb": {}}]}"#.into(),
                "loadBalancingConfig: no supported policy in [\"grpclb\"]",
            ),
            (
                r#"{"loadBalancingConfig": [{"round_robin": {}, "pick_first": {}}]}"#.into(),
                "loadBalancingConfig[0]: must have exactly one policy name",
            ),
            (
                r#"{"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": "yes"}}]}"#
                    .into(),
                "loadBalancingConfig[0].pick_first.shuffleAddressList: must be",
            ),
            (
                r#"{"loadBalancingPolicy": "fastest"}"#.into(),
                "loadBalancingPolicy: unknown policy \"fastest\"",
            ),
            (
                r#"{"healthCheckConfig": {"serviceName": 1}}"#.into(),
                "healthCheckConfig.serviceName: must be a string",
            ),
        ];
        for (json, want) in cases {
            let err = ServiceConfig::parse(&json).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{json}");
            let message = err.message();
            assert!(
                message.starts_with("invalid service config: "),
                "{json}: {message}"
            );
            assert!(
                message.contains(want),
                "{json}:\n  got  {message}\n  want {want}"
            );
        }
    }

    #[test]
    fn pick_first_may_shuffle_its_addresses() {
        let parse = |json: &str| ServiceConfig::parse(json).unwrap();
        let shuffled =
            parse(r#"{"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": true}}]}"#);
        assert_eq!(shuffled.lb_policy, Some(LbPolicy::PickFirst));
        assert!(shuffled.shuffle_address_list);
        let plain = parse(r#"{"loadBalancingConfig": [{"pick_first": {}}]}"#);
        assert!(!plain.shuffle_address_list);
        // Only pick_first shuffles.
        let rr =
            parse(r#"{"loadBalancingConfig": [{"round_robin": {"shuffleAddressList": true}}]}"#);
        assert!(!rr.shuffle_address_list);
    }
}

//! Reconnect backoff, as gRPC's `doc/connection-backoff.md` specifies it.

use std::time::Duration;

/// INITIAL_BACKOFF of the connection-backoff spec.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// MULTIPLIER of the connection-backoff spec.
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 1.6;
/// JITTER of the connection-backoff spec.
pub const DEFAULT_BACKOFF_JITTER: f64 = 0.2;
/// MAX_BACKOFF of the connection-backoff spec.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(120);

/// Backoff settings; the defaults are the spec's.
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Growth factor per failure.
    pub multiplier: f64,
    /// Random spread, as a fraction of the delay (0.2 = ±20 %).
    pub jitter: f64,
    /// Upper bound of the delay before jitter.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: DEFAULT_INITIAL_BACKOFF,
            multiplier: DEFAULT_BACKOFF_MULTIPLIER,
            jitter: DEFAULT_BACKOFF_JITTER,
            max: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl BackoffConfig {
    /// INVALID_ARGUMENT for settings the algorithm cannot use.
    pub(crate) fn check(&self) -> Result<(), crate::Status> {
        let ok = self.initial > Duration::ZERO
            && self.max >= self.initial
            && self.multiplier.is_finite()
            && self.multiplier >= 1.0
            && (0.0..1.0).contains(&self.jitter);
        if ok {
            Ok(())
        } else {
            Err(crate::Status::invalid_argument(format!(
                "invalid backoff {self:?}: need 0 < initial <= max, multiplier >= 1, 0 <= jitter < 1"
            )))
        }
    }
}

/// The backoff state of one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    /// The un-jittered delay the next failure waits.
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            current: config.initial,
        }
    }

    /// The wait after a failed attempt; each call grows the next one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        let grown = base.as_secs_f64() * self.config.multiplier;
        self.current = Duration::from_secs_f64(grown.min(self.config.max.as_secs_f64()));
        let spread = base.as_secs_f64() * self.config.jitter;
        let jittered = base.as_secs_f64() + spread * (2.0 * fastrand::f64() - 1.0);
        Duration::from_secs_f64(jittered.max(0.0))
    }

    /// Back to the initial delay, after a successful connection.
    pub(crate) fn reset(&mut self) {
        self.current = self.config.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_follow_the_spec_within_jitter() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut expected = 1.0f64;
        for _ in 0..20 {
            let d = b.next_delay().as_secs_f64();
            assert!(
                d >= expected * 0.8 - 1e-9 && d <= expected * 1.2 + 1e-9,
                "{d} vs {expected}"
            );
            expected = (expected * 1.6).min(120.0);
        }
        assert!((expected - 120.0).abs() < 1e-9, "reached the cap");
        b.reset();
        let d = b.next_delay().as_secs_f64();
        assert!((0.8..=1.2).contains(&d));
    }

    #[test]
    fn jitter_spreads_delays() {
        let delays: Vec<_> = (0..50)
            .map(|_| Backoff::new(BackoffConfig::default()).next_delay())
            .collect();
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(*max - *min > Duration::from_millis(50), "{min:?}..{max:?}");
    }

    #[test]
    fn bad_settings_are_rejected() {
        let ok = BackoffConfig::default();
        assert!(ok.check().is_ok());
        for bad in [
            BackoffConfig {
                initial: Duration::ZERO,
                ..ok
            },
            BackoffConfig {
                max: Duration::from_millis(1),
                ..ok
            },
            BackoffConfig {
                multiplier: 0.5,
                ..ok
            },
            BackoffConfig { jitter: 1.5, ..ok },
            BackoffConfig {
                multiplier: f64::NAN,
                ..ok
            },
        ] {
            assert_eq!(
                bad.check().unwrap_err().code(),
                crate::Code::InvalidArgument
            );
        }
    }
}

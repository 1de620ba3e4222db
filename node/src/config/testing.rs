//! `[testing]`: switches of the chaos suite's negative controls and clock-skew scenario. TEST ONLY: each one
//! breaks a guarantee on purpose. They are refused unless `enabled = true` is set in the same section, and a node
//! with any of them on logs a warning at start. Nothing reads them in production paths but a boolean.

use super::validate::ensure;
use super::{parse_duration, ConfigError};
use idp_actors::testing::TestingSwitches;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TestingConfig {
    /// Must be `true` for any other key of this section to be accepted.
    #[serde(default)]
    pub enabled: bool,
    /// Offset of this node's clock from the system's: `"5s"` ahead, `"-20s"` behind.
    #[serde(default)]
    pub clock_skew: Option<String>,
    /// I6 control: record writes skip the epoch check.
    #[serde(default)]
    pub unfenced_writes: bool,
    /// I2 control: code redemptions are not recorded.
    #[serde(default)]
    pub forget_redemptions: bool,
    /// I3 control: refresh rotations are not recorded.
    #[serde(default)]
    pub forget_rotations: bool,
    /// I1 control: record writes are acknowledged without reaching Redis.
    #[serde(default)]
    pub ack_without_write: bool,
    /// I4 control: tokens are signed with a fresh key that no JWKS publishes.
    #[serde(default)]
    pub unpublished_signing_key: bool,
    /// I2/I3 control: a replayed code or reused refresh token is refused but its grant is not revoked.
    #[serde(default)]
    pub no_family_revocation: bool,
    /// I5/I7 control: a dead node's shard leases are taken over only after this silence (`"30s"`) instead of
    /// three renewal intervals, so its shards stay unserved that long (with a `cluster.lease_ttl` at least as long).
    #[serde(default)]
    pub takeover_after: Option<String>,
}

impl TestingConfig {
    /// The switches in force: all off unless `enabled`.
    pub fn switches(&self) -> TestingSwitches {
        if !self.enabled {
            return TestingSwitches::default();
        }
        TestingSwitches {
            unfenced_writes: self.unfenced_writes,
            forget_redemptions: self.forget_redemptions,
            forget_rotations: self.forget_rotations,
            ack_without_write: self.ack_without_write,
            unpublished_signing_key: self.unpublished_signing_key,
            no_family_revocation: self.no_family_revocation,
        }
    }

    /// The clock offset in milliseconds (0 unless `enabled`).
    pub fn clock_skew_ms(&self) -> i64 {
        match (&self.clock_skew, self.enabled) {
            (Some(text), true) => parse_skew(text).unwrap_or(0),
            _ => 0,
        }
    }

    /// The slowed takeover silence (`None` unless `enabled`).
    pub fn takeover_after(&self) -> Option<Duration> {
        self.takeover_after.as_deref().filter(|_| self.enabled).and_then(|text| parse_duration(text).ok())
    }

    /// What is on, for the start-up warning (empty when nothing is).
    pub fn describe(&self) -> Vec<String> {
        let mut on: Vec<String> = self.switches().enabled().into_iter().map(str::to_string).collect();
        if self.clock_skew_ms() != 0 {
            on.push(format!("clock_skew={}", self.clock_skew.as_deref().unwrap_or_default()));
        }
        if self.takeover_after().is_some() {
            on.push(format!("takeover_after={}", self.takeover_after.as_deref().unwrap_or_default()));
        }
        on
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(text) = &self.clock_skew {
            let parsed = parse_skew(text);
            ensure(parsed.is_ok(), || "testing.clock_skew".into(), || parsed.err().unwrap_or_default())?;
        }
        if let Some(text) = &self.takeover_after {
            let parsed = parse_duration(text);
            ensure(parsed.is_ok(), || "testing.takeover_after".into(), || parsed.err().unwrap_or_default())?;
        }
        let any = self.clock_skew.is_some() || self.takeover_after.is_some() || self.switches_ignoring_enabled();
        ensure(
            self.enabled || !any,
            || "testing.enabled".into(),
            || "must be true for any [testing] switch: they break guarantees on purpose, for tests only".into(),
        )
    }

    fn switches_ignoring_enabled(&self) -> bool {
        self.unfenced_writes
            || self.forget_redemptions
            || self.forget_rotations
            || self.ack_without_write
            || self.unpublished_signing_key
            || self.no_family_revocation
    }
}

/// `"-20s"` → -20000, `"1500ms"` → 1500.
fn parse_skew(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (sign, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let duration = parse_duration(magnitude)?;
    let millis = i64::try_from(duration.as_millis()).map_err(|_| "is too large".to_string())?;
    Ok(sign * millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_are_refused_unless_enabled() {
        let off = TestingConfig::default();
        assert!(off.validate().is_ok());
        assert_eq!(off.switches(), TestingSwitches::default());
        let sneaky = TestingConfig { forget_redemptions: true, ..TestingConfig::default() };
        let error = sneaky.validate().unwrap_err().to_string();
        assert!(error.contains("testing.enabled"), "{error}");
        assert_eq!(sneaky.switches(), TestingSwitches::default(), "ignored even if validation were skipped");
        let skew = TestingConfig { clock_skew: Some("5s".into()), ..TestingConfig::default() };
        assert!(skew.validate().is_err());
        assert_eq!(skew.clock_skew_ms(), 0);
        let slow = TestingConfig { takeover_after: Some("30s".into()), ..TestingConfig::default() };
        assert!(slow.validate().is_err());
        assert_eq!(slow.takeover_after(), None);
    }

    #[test]
    fn enabled_switches_and_skews_are_in_force() {
        let on = TestingConfig {
            enabled: true,
            clock_skew: Some("-20s".into()),
            unfenced_writes: true,
            ..TestingConfig::default()
        };
        assert!(on.validate().is_ok());
        assert!(on.switches().unfenced_writes);
        assert_eq!(on.clock_skew_ms(), -20_000);
        assert_eq!(on.describe(), ["unfenced_writes", "clock_skew=-20s"]);
        let slow = TestingConfig { enabled: true, takeover_after: Some("30s".into()), ..TestingConfig::default() };
        assert!(slow.validate().is_ok());
        assert_eq!(slow.takeover_after(), Some(Duration::from_secs(30)));
        assert_eq!(slow.describe(), ["takeover_after=30s"]);
        let bad = TestingConfig { enabled: true, takeover_after: Some("later".into()), ..TestingConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("testing.takeover_after"));
        assert_eq!(parse_skew("1500ms"), Ok(1500));
        let bad = TestingConfig { enabled: true, clock_skew: Some("soon".into()), ..TestingConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("testing.clock_skew"));
    }
}

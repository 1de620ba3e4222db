//! Test-only switches that break one guarantee on purpose, so the chaos suite can show that its checker notices
//! (its negative controls). All off by default; a node turns them on only from a `[testing]` config section with
//! `enabled = true`, and logs a warning at start. Each switch is read in exactly one place, named beside it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestingSwitches {
    /// I6: record writes skip the epoch check (`replica::redis::writer`, an unfenced copy of the write script).
    pub unfenced_writes: bool,
    /// I2: a code's redemption is not recorded (`shard::ShardActor::execute` drops the code's own write).
    pub forget_redemptions: bool,
    /// I3: a refresh token's rotation is not recorded (`shard::ShardActor::execute` drops the old token's write).
    pub forget_rotations: bool,
    /// I1: record writes are acknowledged without being sent to Redis (`replica::redis::RedisReplica`).
    pub ack_without_write: bool,
    /// I4: tokens are signed with a fresh key no JWKS publishes (the node's token minting).
    pub unpublished_signing_key: bool,
    /// I2/I3: a replayed code or reused refresh token is still refused, but the grant is not revoked
    /// (`shard::ShardActor::execute` drops the revocation's write).
    #[serde(default)]
    pub no_family_revocation: bool,
}

impl TestingSwitches {
    /// Whether the write of the operation's own record (the code, or the presented refresh token) is dropped, for
    /// the shard operation named `op_type` (`std::any::type_name`).
    pub fn forgets_own_record(&self, op_type: &str) -> bool {
        (self.forget_redemptions && op_type.ends_with("::RedeemCode"))
            || (self.forget_rotations && op_type.ends_with("::RotateRefresh"))
    }

    /// Whether the writes of a decision that refused a replay (`CodeReplayed`, `RefreshReused`) are dropped, so
    /// that the family lives on.
    pub fn keeps_family_after(&self, refused_replay: bool) -> bool {
        self.no_family_revocation && refused_replay
    }

    /// The switches that are on, by name (for the start-up warning).
    pub fn enabled(&self) -> Vec<&'static str> {
        let all = [
            ("unfenced_writes", self.unfenced_writes),
            ("forget_redemptions", self.forget_redemptions),
            ("forget_rotations", self.forget_rotations),
            ("ack_without_write", self.ack_without_write),
            ("unpublished_signing_key", self.unpublished_signing_key),
            ("no_family_revocation", self.no_family_revocation),
        ];
        all.into_iter().filter(|(_, on)| *on).map(|(name, _)| name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_is_off_by_default() {
        let off = TestingSwitches::default();
        assert!(off.enabled().is_empty());
        assert!(!off.forgets_own_record("idp_actors::shard::model::RedeemCode"));
    }

    #[test]
    fn each_forget_switch_names_its_own_operation() {
        let redemptions = TestingSwitches { forget_redemptions: true, ..Default::default() };
        assert!(redemptions.forgets_own_record("idp_actors::shard::model::RedeemCode"));
        assert!(!redemptions.forgets_own_record("idp_actors::shard::model::RotateRefresh"));
        let rotations = TestingSwitches { forget_rotations: true, ..Default::default() };
        assert!(rotations.forgets_own_record("idp_actors::shard::model::RotateRefresh"));
        assert!(!rotations.forgets_own_record("idp_actors::shard::model::NotRotateRefreshX"));
        assert_eq!(rotations.enabled(), ["forget_rotations"]);
        assert!(!rotations.keeps_family_after(true));
        let keeps = TestingSwitches { no_family_revocation: true, ..Default::default() };
        assert!(keeps.keeps_family_after(true) && !keeps.keeps_family_after(false));
        assert_eq!(keeps.enabled(), ["no_family_revocation"]);
    }
}

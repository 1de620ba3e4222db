//! Key names of the Redis layout (docs: `spec/cluster.md`, "Redis layout"). Everything the replica stores is under
//! `idp:`.

use crate::replica::LeaseName;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use idp_proto::records::{RecordKey, RecordKind};
use idp_proto::ShardId;

/// `idp:epoch:<lease>`: the integer epoch of a lease, incremented by every acquisition; never deleted.
pub fn epoch_key(lease: &LeaseName) -> String {
    format!("idp:epoch:{lease}")
}

/// `idp:lease:<lease>`: `"<node> <epoch>"`, with a PX time to live.
pub fn lease_key(lease: &LeaseName) -> String {
    format!("idp:lease:{lease}")
}

/// The key a node increments, then `WAIT`s on, to make sure the replicas hold everything it read before.
pub const BARRIER_KEY: &str = "idp:barrier";

/// `idp:doc:<name>`: a cluster-wide document.
pub fn document_key(name: &str) -> String {
    format!("idp:doc:{name}")
}

/// `idp:r:<shard>:<kind letter><id in base64url>`: a record, expiring at its own expiry.
pub fn record_key(shard: ShardId, key: &RecordKey) -> String {
    let mut name = format!("idp:r:{}:", shard.0);
    name.push(kind_letter(key.kind));
    URL_SAFE_NO_PAD.encode_string(key.id.0, &mut name);
    name
}

/// One letter per record kind, to keep millions of keys short. Stable: changing one orphans every stored record.
fn kind_letter(kind: RecordKind) -> char {
    match kind {
        RecordKind::Pending => 'p',
        RecordKind::Session => 's',
        RecordKind::Code => 'c',
        RecordKind::Grant => 'g',
        RecordKind::Refresh => 'r',
        RecordKind::Consent => 'n',
        RecordKind::Throttle => 't',
        RecordKind::RevokedToken => 'v',
        RecordKind::UserSessions => 'i',
        RecordKind::UpstreamLogin => 'u',
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idp_proto::RecordId;
    use std::collections::HashSet;

    #[test]
    fn key_names_follow_the_layout() {
        assert_eq!(epoch_key(&LeaseName::Shard(ShardId(12))), "idp:epoch:shard:12");
        assert_eq!(lease_key(&LeaseName::Shard(ShardId(0))), "idp:lease:shard:0");
        assert_eq!(epoch_key(&LeaseName::Singleton("keyring")), "idp:epoch:keyring");
        assert_eq!(lease_key(&LeaseName::Singleton("keyring")), "idp:lease:keyring");
        assert_eq!(document_key("keyring"), "idp:doc:keyring");
        let key = RecordKey::new(RecordKind::Code, RecordId([0xfb; 32]));
        assert_eq!(record_key(ShardId(7), &key), format!("idp:r:7:c{}", "-_v7".repeat(10) + "-_s"));
    }

    #[test]
    fn every_record_kind_has_its_own_letter() {
        let letters: HashSet<char> = RecordKind::ALL.into_iter().map(kind_letter).collect();
        assert_eq!(letters.len(), RecordKind::ALL.len());
    }
}

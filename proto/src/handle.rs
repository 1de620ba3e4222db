//! Handles: the shard number plus 256 bits from a CSPRNG, base64url-encoded.
//!
//! Every shardable record (pending authorization, session, code, refresh token) is addressed by a handle, so any
//! node can route any handle without a lookup, and guessing one is hopeless.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The shard count of a cluster unless configured otherwise; fixed when the cluster is created.
pub const DEFAULT_SHARD_COUNT: u16 = 1024;

/// Bytes of a handle: two of shard number, thirty-two random.
const HANDLE_BYTES: usize = 34;
/// Characters of an encoded handle (34 bytes in unpadded base64url).
pub const HANDLE_CHARS: usize = 46;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId(pub u16);

impl fmt::Display for ShardId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// The 256 random bits that name a record inside its shard.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId(#[serde(with = "base64_bytes")] pub [u8; 32]);

impl RecordId {
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

/// Record ids name bearer secrets (a session id is half of a session cookie): never print them.
impl fmt::Debug for RecordId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("RecordId([redacted])")
    }
}

/// A routable, unguessable reference to a record: `shard ‖ id`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle {
    pub shard: ShardId,
    pub id: RecordId,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("malformed handle")]
    Malformed,
    #[error("handle names shard {shard} of a cluster with {shard_count} shards")]
    ShardOutOfRange { shard: u16, shard_count: u16 },
}

impl Handle {
    /// A fresh handle in a shard chosen uniformly at random.
    pub fn random(shard_count: u16) -> Self {
        let shard = ShardId((rand::rng().next_u32() % u32::from(shard_count.max(1))) as u16);
        Self::random_in(shard)
    }

    /// A fresh handle in the given shard (records that must live beside another one, like a code beside its session).
    pub fn random_in(shard: ShardId) -> Self {
        Self { shard, id: RecordId::random() }
    }

    pub fn encode(&self) -> String {
        let mut bytes = [0u8; HANDLE_BYTES];
        bytes[..2].copy_from_slice(&self.shard.0.to_be_bytes());
        bytes[2..].copy_from_slice(&self.id.0);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses an encoded handle; rejects any other length, alphabet or a shard beyond the cluster's count.
    pub fn decode(text: &str, shard_count: u16) -> Result<Self, HandleError> {
        if text.len() != HANDLE_CHARS {
            return Err(HandleError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| HandleError::Malformed)?;
        let bytes: [u8; HANDLE_BYTES] = bytes.try_into().map_err(|_| HandleError::Malformed)?;
        let shard = u16::from_be_bytes([bytes[0], bytes[1]]);
        if shard >= shard_count {
            return Err(HandleError::ShardOutOfRange { shard, shard_count });
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&bytes[2..]);
        Ok(Self { shard: ShardId(shard), id: RecordId(id) })
    }
}

/// Handles are bearer secrets (codes, refresh tokens, session cookies): `Debug` shows the shard only.
impl fmt::Debug for Handle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Handle(shard {}, [redacted])", self.shard)
    }
}

/// The shard that owns a record named by a key that is not a handle (a username, a user and client pair):
/// FNV-1a over the key, stable across versions and platforms since every node must agree.
pub fn shard_for_key(key: &[u8], shard_count: u16) -> ShardId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    ShardId((hash % u64::from(shard_count.max(1))) as u16)
}

mod base64_bytes {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(serde::de::Error::custom)?;
        bytes.try_into().map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_keep_their_shard() {
        for _ in 0..100 {
            let handle = Handle::random(DEFAULT_SHARD_COUNT);
            let encoded = handle.encode();
            assert_eq!(encoded.len(), HANDLE_CHARS);
            assert_eq!(Handle::decode(&encoded, DEFAULT_SHARD_COUNT), Ok(handle));
        }
    }

    #[test]
    fn decode_rejects_malformed_input() {
        let valid = Handle::random_in(ShardId(3)).encode();
        assert_eq!(Handle::decode("", 1024), Err(HandleError::Malformed));
        assert_eq!(Handle::decode(&valid[1..], 1024), Err(HandleError::Malformed));
        assert_eq!(Handle::decode(&format!("{valid}A"), 1024), Err(HandleError::Malformed));
        let mut bad_alphabet = valid.clone();
        bad_alphabet.replace_range(10..11, "+");
        assert_eq!(Handle::decode(&bad_alphabet, 1024), Err(HandleError::Malformed));
        let multibyte = "é".repeat(23);
        assert_eq!(Handle::decode(&multibyte, 1024), Err(HandleError::Malformed));
    }

    #[test]
    fn decode_rejects_a_shard_beyond_the_cluster() {
        let handle = Handle::random_in(ShardId(1023));
        assert!(Handle::decode(&handle.encode(), 1024).is_ok());
        assert_eq!(
            Handle::decode(&handle.encode(), 512),
            Err(HandleError::ShardOutOfRange { shard: 1023, shard_count: 512 })
        );
    }

    #[test]
    fn random_handles_spread_over_every_shard() {
        let mut seen = [false; 16];
        for _ in 0..2000 {
            seen[Handle::random(16).shard.0 as usize] = true;
        }
        assert!(seen.iter().all(|hit| *hit));
    }

    #[test]
    fn debug_hides_the_random_part() {
        let handle = Handle::random(1024);
        let text = format!("{handle:?}");
        assert!(!text.contains(&handle.encode()[3..]));
        assert!(text.contains("redacted"));
    }

    #[test]
    fn shard_for_key_is_stable_and_in_range() {
        assert_eq!(shard_for_key(b"alice", 1024), shard_for_key(b"alice", 1024));
        for name in ["alice", "bob", "", "ünïcode"] {
            assert!(shard_for_key(name.as_bytes(), 7).0 < 7);
        }
    }
}

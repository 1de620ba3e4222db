//! `idp-actors`: the actors that own the provider's state, and the replica behind them.
//!
//! The domain logic lives in plain-data models (`shard::model`, `keyring::model`) tested with plain `#[test]`s;
//! the actors are thin shells that sequence messages, write through the [`replica::Replica`] and reply only after
//! the replica acknowledged. The outside world is reached through traits only: [`clock::Clock`] and
//! [`replica::Replica`].

pub mod clock;
pub mod jwt;
pub mod keyring;
pub mod replica;
pub mod shard;
pub mod shards;
pub mod testing;

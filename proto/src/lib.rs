//! `idp-proto`: the data model shared by every crate of the identity provider.
//!
//! Records, handles, OAuth/OIDC error codes and the secret newtypes. Serde only, no I/O: the actors own the
//! state, the node speaks HTTP, and both agree on these types.

pub mod error;
pub mod handle;
pub mod records;
pub mod rpc;
pub mod secret;

pub use error::ErrorCode;
pub use handle::{shard_for_key, Handle, HandleError, RecordId, ShardId, DEFAULT_SHARD_COUNT};
pub use secret::Secret;

//! Password hashing: argon2id with the OWASP parameters (m = 19456 KiB, t = 2, p = 1), and a bounded verifier that
//! runs the hashing on tokio's blocking pool so a login never stalls an event loop.
//!
//! Verification costs about 40 ms of one core; [`PasswordVerifier`] lets `concurrency` of them run at once and
//! queues the rest. An unknown user costs one verification too, against a dummy hash, so the response time does
//! not tell whether a username exists.

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier as _, Version};
use idp_proto::Secret;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Longest password accepted, in bytes; longer ones are refused without hashing (no hashing-cost attacks).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// OWASP Password Storage Cheat Sheet: argon2id, 19 MiB, 2 iterations, 1 lane.
const MEMORY_KIB: u32 = 19_456;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

fn argon2id() -> Result<Argon2<'static>, PasswordError> {
    let params =
        Params::new(MEMORY_KIB, ITERATIONS, LANES, None).map_err(|error| PasswordError::Hashing(error.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with a fresh random salt; returns the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    let hash =
        argon2id()?.hash_password(password.as_bytes()).map_err(|error| PasswordError::Hashing(error.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `phc`, with the parameters the string carries. The final comparison
/// is constant-time (argon2's `Output` compares in constant time); a malformed `phc` or an over-long password is
/// `false`. Blocks for the whole hash: from async code use [`PasswordVerifier`].
pub fn verify_password(phc: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default().verify_password(password.as_bytes(), &hash).is_ok()
}

/// Verifies passwords on the blocking pool, at most `concurrency` at once; the rest wait in a queue.
#[derive(Clone)]
pub struct PasswordVerifier {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    /// Verified against when the user is unknown, so that path costs the same as a wrong password.
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for PasswordVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PasswordVerifier")
            .field("available_permits", &self.permits.available_permits())
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

impl PasswordVerifier {
    /// A verifier running `concurrency` verifications at once (0 means one per core). Computes the dummy hash
    /// once, now (one argon2 hash).
    pub fn new(concurrency: usize) -> Result<Self, PasswordError> {
        let concurrency = match concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            given => given,
        };
        let dummy_password: [u8; 32] = rand::random();
        let dummy_hash = hash_password(&hex(&dummy_password))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            waiting: Arc::new(AtomicUsize::new(0)),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Whether `password` matches `phc`. `None` (unknown user) still spends one verification, against the dummy
    /// hash, and is `false`. Passwords longer than [`MAX_PASSWORD_BYTES`] are `false` at once.
    pub async fn verify(&self, phc: Option<Arc<str>>, password: Secret<String>) -> bool {
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return false;
        }
        let user_known = phc.is_some();
        let phc = phc.unwrap_or_else(|| Arc::clone(&self.dummy_hash));
        let permit = {
            let _queued = QueuedGuard::enter(&self.waiting);
            match Arc::clone(&self.permits).acquire_owned().await {
                Ok(permit) => permit,
                Err(_closed) => return false,
            }
        };
        // The permit moves into the task: a caller that gives up does not free a slot still hashing.
        let verification = tokio::task::spawn_blocking(move || {
            let matched = verify_password(&phc, password.expose());
            drop(permit);
            matched
        });
        verification.await.unwrap_or(false) && user_known
    }

    /// Verifications waiting for a free slot (not counting those running).
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Counts a caller as queued for as long as it lives, even if its future is dropped while waiting.
struct QueuedGuard<'a>(&'a AtomicUsize);

impl<'a> QueuedGuard<'a> {
    fn enter(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Self(waiting)
    }
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hash_is_argon2id_with_owasp_parameters_and_verifies() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password(&phc, "correct horse"));
        assert!(!verify_password(&phc, "correct horse "));
        assert!(!verify_password(&phc, ""));
    }

    #[test]
    fn each_hash_has_its_own_salt() {
        assert_ne!(hash_password("same").unwrap(), hash_password("same").unwrap());
    }

    #[test]
    fn malformed_hashes_never_verify() {
        assert!(!verify_password("", "x"));
        assert!(!verify_password("not a phc string", "x"));
        assert!(!verify_password("$argon2id$v=19$m=19456,t=2,p=1$", "x"));
    }

    #[test]
    fn over_long_passwords_are_refused_without_hashing() {
        let long = "a".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(hash_password(&long), Err(PasswordError::TooLong)));
        let phc = hash_password(&"a".repeat(MAX_PASSWORD_BYTES)).unwrap();
        assert!(verify_password(&phc, &"a".repeat(MAX_PASSWORD_BYTES)));
        assert!(!verify_password(&phc, &long));
    }

    #[tokio::test]
    async fn verifier_accepts_the_right_password_only() {
        let verifier = PasswordVerifier::new(2).unwrap();
        let phc: Arc<str> = hash_password("s3cret").unwrap().into();
        assert!(verifier.verify(Some(phc.clone()), Secret::new("s3cret".into())).await);
        assert!(!verifier.verify(Some(phc), Secret::new("wrong".into())).await);
    }

    #[tokio::test]
    async fn verifier_refuses_unknown_users_and_over_long_passwords() {
        let verifier = PasswordVerifier::new(1).unwrap();
        assert!(!verifier.verify(None, Secret::new(String::new())).await);
        let phc: Arc<str> = hash_password("s3cret").unwrap().into();
        let long = Secret::new("a".repeat(MAX_PASSWORD_BYTES + 1));
        assert!(!verifier.verify(Some(phc), long).await);
    }

    #[tokio::test]
    async fn unknown_users_cost_a_verification_like_known_ones() {
        let verifier = PasswordVerifier::new(1).unwrap();
        let started = std::time::Instant::now();
        assert!(!verifier.verify(None, Secret::new("guess".into())).await);
        let unknown_user = started.elapsed();
        // A verification takes milliseconds; refusing without one takes microseconds.
        assert!(unknown_user >= Duration::from_millis(2), "{unknown_user:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifications_beyond_the_concurrency_queue() {
        let verifier = PasswordVerifier::new(1).unwrap();
        let phc: Arc<str> = hash_password("s3cret").unwrap().into();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (verifier, phc) = (verifier.clone(), phc.clone());
                tokio::spawn(async move { verifier.verify(Some(phc), Secret::new("s3cret".into())).await })
            })
            .collect();
        wait_for(|| verifier.queue_depth() >= 2, Duration::from_secs(10)).await;
        for task in tasks {
            assert!(task.await.unwrap());
        }
        assert_eq!(verifier.queue_depth(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_caller_leaves_the_queue() {
        let verifier = PasswordVerifier::new(1).unwrap();
        let _held = verifier.permits.clone().acquire_owned().await.unwrap();
        let waiting = verifier.verify(None, Secret::new("x".into()));
        assert!(tokio::time::timeout(Duration::from_millis(20), waiting).await.is_err());
        assert_eq!(verifier.queue_depth(), 0);
    }

    async fn wait_for(condition: impl Fn() -> bool, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "condition not met within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

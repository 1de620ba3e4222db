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

/// Verifies passwords on a dedicated pool of `concurrency` threads fed by one queue: a thread that finishes a hash
/// takes the next job at once, so the pool stays busy under load and no event loop ever runs argon2.
#[derive(Clone)]
pub struct PasswordVerifier {
    jobs_tx: std::sync::mpsc::SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
    max_queued: usize,
    /// Verified against when the user is unknown, so that path costs the same as a wrong password.
    dummy_hash: Arc<str>,
}

/// One verification: the stored hash, the candidate, and where to send the answer.
struct Job {
    phc: Arc<str>,
    password: Secret<String>,
    answer_tx: tokio::sync::oneshot::Sender<bool>,
}

/// The password pool's queue is full: retry later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("password verification is saturated, retry later")]
pub struct PasswordBusy;

/// Verifications queued beyond this are refused ([`PasswordBusy`]) rather than piling up without bound.
const MAX_QUEUED: usize = 4096;

impl std::fmt::Debug for PasswordVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PasswordVerifier").field("queue_depth", &self.queue_depth()).finish()
    }
}

impl PasswordVerifier {
    /// A verifier running `concurrency` verifications at once (0 means one per core). Computes the dummy hash
    /// once, now (one argon2 hash), and starts the pool's threads; they end when the last clone is dropped.
    pub fn new(concurrency: usize) -> Result<Self, PasswordError> {
        Self::with_queue(concurrency, MAX_QUEUED)
    }

    /// [`PasswordVerifier::new`] with at most `max_queued` verifications waiting.
    pub fn with_queue(concurrency: usize, max_queued: usize) -> Result<Self, PasswordError> {
        let concurrency = match concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            given => given,
        };
        let dummy_password: [u8; 32] = rand::random();
        let dummy_hash = hash_password(&hex(&dummy_password))?;
        let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel::<Job>(max_queued);
        let jobs_rx = Arc::new(std::sync::Mutex::new(jobs_rx));
        let waiting = Arc::new(AtomicUsize::new(0));
        for index in 0..concurrency {
            let (jobs_rx, waiting) = (Arc::clone(&jobs_rx), Arc::clone(&waiting));
            std::thread::Builder::new()
                .name(format!("idp-argon2-{index}"))
                .spawn(move || verify_jobs(&jobs_rx, &waiting))
                .map_err(|error| PasswordError::Hashing(format!("starting the hashing pool: {error}")))?;
        }
        Ok(Self { jobs_tx, waiting, max_queued, dummy_hash: dummy_hash.into() })
    }

    /// Whether `password` matches `phc`. `None` (unknown user) still spends one verification, against the dummy
    /// hash, and is `false`. Passwords longer than [`MAX_PASSWORD_BYTES`] are `false` at once. A full queue is
    /// [`PasswordBusy`]: the caller answers "retry later", never "wrong password".
    pub async fn try_verify(&self, phc: Option<Arc<str>>, password: Secret<String>) -> Result<bool, PasswordBusy> {
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let user_known = phc.is_some();
        let phc = phc.unwrap_or_else(|| Arc::clone(&self.dummy_hash));
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
        let queued = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        crate::telemetry::metrics::password_queue_depth(queued);
        if self.jobs_tx.try_send(Job { phc, password, answer_tx }).is_err() {
            let left = self.waiting.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
            crate::telemetry::metrics::password_queue_depth(left);
            tracing::warn!("password verification queue full");
            return Err(PasswordBusy);
        }
        let matched = answer_rx.await.map_err(|_| PasswordBusy)?;
        Ok(matched && user_known)
    }

    /// [`PasswordVerifier::try_verify`], with a full queue counted as a mismatch.
    pub async fn verify(&self, phc: Option<Arc<str>>, password: Secret<String>) -> bool {
        self.try_verify(phc, password).await.unwrap_or(false)
    }

    /// Whether the queue is full: a login should be turned away (503) before it is even counted.
    pub fn is_saturated(&self) -> bool {
        self.queue_depth() >= self.max_queued
    }

    /// Verifications waiting for a free thread (not counting those running).
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// A pool thread: takes jobs until every sender is gone.
fn verify_jobs(jobs_rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>, waiting: &AtomicUsize) {
    loop {
        let job = match jobs_rx.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_poisoned) => return,
        };
        let Ok(job) = job else { return };
        let left = waiting.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        crate::telemetry::metrics::password_queue_depth(left);
        // A caller that gave up still gets its slot spent: the hash runs to completion either way.
        let matched = verify_password(&job.phc, job.password.expose());
        let _ = job.answer_tx.send(matched);
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

    /// A full queue is "busy", never "wrong password": one thread and one queue slot cannot take three at once.
    #[tokio::test]
    async fn a_full_queue_is_busy_not_a_mismatch() {
        let verifier = PasswordVerifier::with_queue(1, 1).unwrap();
        let phc: Arc<str> = hash_password("s3cret").unwrap().into();
        let attempts: Vec<_> =
            (0..3).map(|_| verifier.try_verify(Some(phc.clone()), Secret::new("s3cret".into()))).collect();
        let outcomes = futures::future::join_all(attempts).await;
        assert!(outcomes.contains(&Err(PasswordBusy)), "{outcomes:?}");
        assert!(outcomes.iter().all(|outcome| *outcome != Ok(false)), "never a mismatch: {outcomes:?}");
        assert!(outcomes.contains(&Ok(true)), "{outcomes:?}");
        assert!(!verifier.is_saturated());
    }

    #[tokio::test]
    async fn a_cancelled_caller_still_drains_from_the_queue() {
        let verifier = PasswordVerifier::new(1).unwrap();
        let phc: Arc<str> = hash_password("s3cret").unwrap().into();
        // Three callers give up at once; their jobs still run (the slot is spent), then leave the queue.
        for _ in 0..3 {
            let waiting = verifier.verify(Some(phc.clone()), Secret::new("s3cret".into()));
            assert!(tokio::time::timeout(Duration::from_millis(1), waiting).await.is_err());
        }
        wait_for(|| verifier.queue_depth() == 0, Duration::from_secs(10)).await;
        assert!(verifier.verify(Some(phc), Secret::new("s3cret".into())).await, "the pool still serves");
    }

    async fn wait_for(condition: impl Fn() -> bool, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "condition not met within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

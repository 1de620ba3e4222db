//! The argon2id bound of this machine: how many password verifications per second every core together can do,
//! with the parameters the node uses (OWASP: m = 19456 KiB, t = 2, p = 1). A password login cannot beat it.

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use std::time::{Duration, Instant};

/// Returns the thread count and the verifications per second over `duration`.
pub fn argon2_bound(duration: Duration) -> anyhow::Result<(usize, f64)> {
    let params = Params::new(19_456, 2, 1, None).map_err(|error| anyhow::anyhow!("{error}"))?;
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let phc = hasher.hash_password(b"calibration-password").map_err(|error| anyhow::anyhow!("{error}"))?.to_string();
    let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
    let started = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (hasher, phc) = (hasher.clone(), phc.clone());
                scope.spawn(move || {
                    let parsed = PasswordHash::new(&phc).expect("own hash parses");
                    let mut count = 0u64;
                    while started.elapsed() < duration {
                        let verified = hasher.verify_password(b"calibration-password", &parsed).is_ok();
                        assert!(verified, "calibration hash must verify");
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().expect("calibration thread")).collect()
    });
    Ok((threads, counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64()))
}

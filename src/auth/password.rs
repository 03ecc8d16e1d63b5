//! Password hashing. New hashes are argon2id (PHC string). Better Auth's scrypt hashes
//! (`<salt hex>:<key hex>`) still verify so imported users can sign in; the caller
//! upgrades them to argon2id on that sign-in.
//!
//! Both algorithms are deliberately slow (tens of milliseconds and megabytes each), so
//! every call runs on the blocking pool, and at most one per core at a time: a flood of
//! sign-ins waits in line as cheap futures instead of spawning a blocking thread (and an
//! argon2 memory block) per request.

use std::sync::OnceLock;

use tokio::sync::Semaphore;

use argon2::password_hash::SaltString;
use argon2::password_hash::rand_core::OsRng;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use subtle::ConstantTimeEq;
use unicode_normalization::UnicodeNormalization;

#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Correct, but stored in a legacy format that should be replaced.
    YesNeedsUpgrade,
}

fn argon2_hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default params cannot fail on a generated salt")
        .to_string()
}

fn verify_sync(password: &str, stored: &str) -> Verified {
    if stored.starts_with("$argon2") {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return Verified::No;
        };
        return match Argon2::default().verify_password(password.as_bytes(), &parsed) {
            Ok(()) => Verified::Yes,
            Err(_) => Verified::No,
        };
    }
    if let Some((salt, key_hex)) = stored.split_once(':') {
        return match verify_better_auth_scrypt(password, salt, key_hex) {
            true => Verified::YesNeedsUpgrade,
            false => Verified::No,
        };
    }
    Verified::No
}

/// Better Auth 1.x: scrypt(N=16384, r=16, p=1, dkLen=64) over the NFKC-normalised password,
/// with the hex salt *string* (not its decoded bytes) as the salt.
fn verify_better_auth_scrypt(password: &str, salt: &str, key_hex: &str) -> bool {
    let Some(expected) = decode_hex(key_hex) else {
        return false;
    };
    if expected.len() != 64 {
        return false;
    }
    let params = scrypt::Params::new(14, 16, 1, 64).expect("valid scrypt parameters");
    let normalized: String = password.nfkc().collect();
    let mut derived = [0u8; 64];
    if scrypt::scrypt(
        normalized.as_bytes(),
        salt.as_bytes(),
        &params,
        &mut derived,
    )
    .is_err()
    {
        return false;
    }
    derived.ct_eq(expected.as_slice()).into()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A hash computed once, verified against when the user does not exist, so that an unknown
/// email costs the same time as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| argon2_hash("watchpost-timing-equaliser"))
}

fn hashing_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

/// Runs one slow hashing job on the blocking pool once a per-core slot is free.
async fn run_hashing<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let _slot = hashing_slots()
        .acquire()
        .await
        .expect("the hashing semaphore is never closed");
    tokio::task::spawn_blocking(job).await
}

pub async fn hash(password: String) -> String {
    run_hashing(move || argon2_hash(&password))
        .await
        .expect("password hashing task panicked")
}

pub async fn verify(password: String, stored: String) -> Verified {
    run_hashing(move || verify_sync(&password, &stored))
        .await
        .unwrap_or(Verified::No)
}

/// Burns the same work as a real verification and always fails.
pub async fn verify_dummy(password: String) {
    let _ = run_hashing(move || verify_sync(&password, dummy_hash())).await;
}

/// Produces a Better Auth-format scrypt hash; used by tests and by importers.
pub fn better_auth_scrypt_hash(password: &str, salt_hex: &str) -> String {
    let params = scrypt::Params::new(14, 16, 1, 64).expect("valid scrypt parameters");
    let normalized: String = password.nfkc().collect();
    let mut derived = [0u8; 64];
    scrypt::scrypt(
        normalized.as_bytes(),
        salt_hex.as_bytes(),
        &params,
        &mut derived,
    )
    .expect("64-byte output is valid");
    format!("{salt_hex}:{}", crate::crypto::hex(&derived))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let h = argon2_hash("correct horse");
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(verify_sync("correct horse", &h), Verified::Yes);
        assert_eq!(verify_sync("wrong horse", &h), Verified::No);
    }

    #[test]
    fn better_auth_scrypt_verifies_and_asks_for_upgrade() {
        let h = better_auth_scrypt_hash("päss word", "0123456789abcdef0123456789abcdef");
        assert_eq!(verify_sync("päss word", &h), Verified::YesNeedsUpgrade);
        // NFKC: the decomposed form of ä is the same password.
        assert_eq!(
            verify_sync("pa\u{308}ss word", &h),
            Verified::YesNeedsUpgrade
        );
        assert_eq!(verify_sync("pass word", &h), Verified::No);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_hashing_runs_at_most_one_job_per_core() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..cores * 8)
            .map(|_| {
                let (running, peak) = (running.clone(), peak.clone());
                tokio::spawn(run_hashing(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak >= 1 && peak <= cores, "peak {peak} with {cores} cores");
    }

    #[test]
    fn garbage_hashes_never_verify() {
        for stored in ["", "plain", "zz:zz", "$argon2id$broken", "abcd:1234"] {
            assert_eq!(verify_sync("x", stored), Verified::No);
        }
    }
}

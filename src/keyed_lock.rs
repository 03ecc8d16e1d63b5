//! Locks by key (an account, a camera) for check-then-act work that spans awaits: a check
//! and the write it allows run one at a time per key. Keys share a fixed set of locks by
//! hash, so nothing grows with the number of keys; two keys that share one only wait for
//! each other. One process serves the database, so an in-process lock is enough.

use std::hash::{Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 32;

pub struct KeyedLock([Mutex<()>; STRIPES]);

impl KeyedLock {
    pub const fn new() -> Self {
        KeyedLock([const { Mutex::const_new(()) }; STRIPES])
    }

    pub async fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        self.0[(hasher.finish() % STRIPES as u64) as usize]
            .lock()
            .await
    }
}

impl Default for KeyedLock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_key_waits_and_another_does_not() {
        static LOCKS: KeyedLock = KeyedLock::new();
        let held = LOCKS.lock("camera-1").await;
        let same =
            tokio::time::timeout(std::time::Duration::from_millis(50), LOCKS.lock("camera-1"));
        assert!(same.await.is_err(), "the same key got in while held");
        // Some other key lands on another stripe and goes straight in.
        let mut other_got_in = false;
        for i in 0..8 {
            let key = format!("camera-{}", i + 2);
            let other =
                tokio::time::timeout(std::time::Duration::from_millis(50), LOCKS.lock(&key));
            other_got_in |= other.await.is_ok();
        }
        assert!(other_got_in);
        drop(held);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), LOCKS.lock("camera-1"))
                .await
                .is_ok()
        );
    }
}

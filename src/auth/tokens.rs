//! Identifiers in Better Auth's format.

use rand::Rng;
use rand::distributions::Alphanumeric;

/// 32 characters of `[A-Za-z0-9]` from the OS RNG: Better Auth's id and token format.
pub fn generate_id() -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_alphanumerics() {
        let id = generate_id();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(id, generate_id());
    }
}

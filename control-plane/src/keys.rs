//! Secrets the control plane hands out (API keys, enrollment tokens, data-plane credentials): random,
//! shown once, stored only as SHA-256 hashes. They carry 256 bits of randomness, so a fast hash is
//! enough; a slow password hash would only slow down every data plane's key check.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A new random secret with a readable prefix, e.g. `omk_…` for API keys.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("{prefix}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Hex SHA-256, the only form in which secrets are stored and sent to data planes.
pub fn sha256_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first characters of a key, enough to recognise it in a list.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(10).collect()
}

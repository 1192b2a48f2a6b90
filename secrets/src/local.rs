//! The `local` key provider: one 256-bit master key in a file, for dev and single-machine installs.
//! Data keys are wrapped with AES-256-GCM under the master key, bound to the key id and tenant.

use std::path::Path;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;

use crate::{DataKey, KeyProvider, SecretsError};

pub struct LocalKeys {
    master: [u8; 32],
}

impl std::fmt::Debug for LocalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKeys(<redacted>)")
    }
}

impl LocalKeys {
    pub fn from_key(master: [u8; 32]) -> LocalKeys {
        LocalKeys { master }
    }

    /// Reads the key file, or creates it (mode 0600) with a fresh random key.
    pub fn open_or_create(path: &Path) -> Result<LocalKeys, SecretsError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|_| SecretsError::KeyFileFormat { path: shown.clone() })?;
                let master: [u8; 32] = bytes.try_into().map_err(|_| SecretsError::KeyFileFormat { path: shown })?;
                Ok(LocalKeys { master })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let master: [u8; 32] = Aes256Gcm::generate_key(&mut OsRng).into();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| SecretsError::KeyFile { path: shown.clone(), source })?;
                }
                write_private(path, &base64::engine::general_purpose::STANDARD.encode(master))
                    .map_err(|source| SecretsError::KeyFile { path: shown, source })?;
                Ok(LocalKeys { master })
            }
            Err(source) => Err(SecretsError::KeyFile { path: shown, source }),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.master))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[async_trait::async_trait]
impl KeyProvider for LocalKeys {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn generate_data_key(&self, key_id: &str, context: &str) -> Result<DataKey, SecretsError> {
        let plaintext: [u8; 32] = Aes256Gcm::generate_key(&mut OsRng).into();
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = format!("{key_id}\n{context}");
        let sealed = self
            .cipher()
            .encrypt(&nonce, Payload { msg: &plaintext, aad: aad.as_bytes() })
            .map_err(|_| SecretsError::Provider { key_id: key_id.into(), message: "wrapping failed".into() })?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&sealed);
        Ok(DataKey { plaintext, wrapped })
    }

    async fn unwrap_data_key(&self, key_id: &str, context: &str, wrapped: &[u8]) -> Result<[u8; 32], SecretsError> {
        if wrapped.len() < 12 {
            return Err(SecretsError::WrongKey { key_id: key_id.into() });
        }
        let (nonce, body) = wrapped.split_at(12);
        let aad = format!("{key_id}\n{context}");
        let key = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: aad.as_bytes() })
            .map_err(|_| SecretsError::WrongKey { key_id: key_id.into() })?;
        key.try_into().map_err(|_| SecretsError::WrongKey { key_id: key_id.into() })
    }
}

//! Sealed credentials: envelope encryption.
//!
//! Each secret gets a fresh 256-bit data key; the secret is encrypted with it (AES-256-GCM, bound by
//! associated data to the tenant, connection and option it belongs to), and the data key is wrapped by
//! the tenant's key-encryption key through a [`KeyProvider`]: [`LocalKeys`] (a key file, for dev) or
//! [`AwsKms`] (AWS KMS or a compatible server). The control plane seals; a data plane unseals with its
//! own access to the same key. A [`Sealed`] value is safe to store, log and send: it holds no plaintext.

mod aws;
mod local;

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub use aws::AwsKms;
pub use local::LocalKeys;

const PREFIX: &str = "sealed:v1:";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the sealed value is malformed: {0}")]
    Malformed(&'static str),
    #[error("cannot open the sealed value: it was sealed for another tenant, connection or option, or it was tampered with")]
    Tampered,
    #[error("key `{key_id}` cannot unwrap this data key: wrong key, or the wrapped key was tampered with")]
    WrongKey { key_id: String },
    #[error("this process may not use key `{key_id}` for this data key: grant it decrypt access to the tenant's key")]
    AccessDenied { key_id: String },
    #[error("the key provider failed for key `{key_id}`: {message}")]
    Provider { key_id: String, message: String },
    #[error("cannot read the local key file {path}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the local key file {path} must hold 32 bytes, base64-encoded")]
    KeyFileFormat { path: String },
}

/// A data key, in the clear and wrapped by the key-encryption key.
pub struct DataKey {
    pub plaintext: [u8; 32],
    pub wrapped: Vec<u8>,
}

/// Wraps and unwraps data keys with a tenant's key-encryption key (`key_id`). `context` (the tenant id)
/// binds the wrapped key to its tenant: unwrapping it under another tenant fails.
#[async_trait::async_trait]
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// `local` or `aws-kms`.
    fn name(&self) -> &'static str;
    async fn generate_data_key(&self, key_id: &str, context: &str) -> Result<DataKey, SecretsError>;
    async fn unwrap_data_key(&self, key_id: &str, context: &str, wrapped: &[u8]) -> Result<[u8; 32], SecretsError>;
}

/// What a sealed secret is bound to: opening it under any other binding fails.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub tenant: &'a str,
    pub connection: &'a str,
    pub option: &'a str,
}

impl Binding<'_> {
    fn aad(&self) -> String {
        format!("omnisql/{}/{}/{}", self.tenant, self.connection, self.option)
    }
}

/// A sealed secret: the wrapped data key and the ciphertext, never the plaintext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub key_id: String,
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed").field("key_id", &self.key_id).field("ciphertext_len", &self.ciphertext.len()).finish()
    }
}

impl Sealed {
    /// The text form stored and sent: `sealed:v1:<base64 JSON>`.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(json))
    }

    pub fn decode(text: &str) -> Result<Sealed, SecretsError> {
        let body = text.strip_prefix(PREFIX).ok_or(SecretsError::Malformed("it does not start with `sealed:v1:`"))?;
        let json =
            base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| SecretsError::Malformed("it is not base64"))?;
        serde_json::from_slice(&json).map_err(|_| SecretsError::Malformed("it is not a sealed value"))
    }

    pub fn is_sealed(text: &str) -> bool {
        text.starts_with(PREFIX)
    }
}

/// Seals and opens secrets with one key provider.
#[derive(Debug, Clone)]
pub struct Sealer {
    provider: Arc<dyn KeyProvider>,
}

impl Sealer {
    pub fn new(provider: Arc<dyn KeyProvider>) -> Sealer {
        Sealer { provider }
    }

    pub fn provider(&self) -> &'static str {
        self.provider.name()
    }

    pub async fn seal(&self, key_id: &str, binding: Binding<'_>, plaintext: &str) -> Result<Sealed, SecretsError> {
        let key = self.provider.generate_data_key(key_id, binding.tenant).await?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.plaintext));
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = binding.aad();
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| SecretsError::Malformed("encryption failed"))?;
        Ok(Sealed { key_id: key_id.to_string(), wrapped_key: key.wrapped, nonce: nonce.to_vec(), ciphertext })
    }

    pub async fn open(&self, sealed: &Sealed, binding: Binding<'_>) -> Result<String, SecretsError> {
        if sealed.nonce.len() != 12 {
            return Err(SecretsError::Malformed("the nonce is not 12 bytes"));
        }
        let key = self.provider.unwrap_data_key(&sealed.key_id, binding.tenant, &sealed.wrapped_key).await?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));
        let aad = binding.aad();
        let plaintext = cipher
            .decrypt(Nonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad: aad.as_bytes() })
            .map_err(|_| SecretsError::Tampered)?;
        String::from_utf8(plaintext).map_err(|_| SecretsError::Tampered)
    }
}

/// Which provider to use, from flags or environment.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    /// A key file (created with a fresh key if missing).
    Local { key_file: std::path::PathBuf },
    /// AWS KMS; `endpoint` points at a compatible server (e.g. for tests), `region` defaults to the
    /// AWS environment's.
    AwsKms { endpoint: Option<String>, region: Option<String> },
}

impl ProviderConfig {
    pub async fn build(&self) -> Result<Arc<dyn KeyProvider>, SecretsError> {
        Ok(match self {
            ProviderConfig::Local { key_file } => Arc::new(LocalKeys::open_or_create(key_file)?),
            ProviderConfig::AwsKms { endpoint, region } => Arc::new(AwsKms::new(endpoint.as_deref(), region.as_deref()).await),
        })
    }
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

pub mod testing;

//! The `aws-kms` key provider: data keys from KMS `GenerateDataKey`, unwrapped with `Decrypt`, both with
//! the tenant as encryption context. Credentials and region come from the usual AWS environment; the
//! endpoint can point at a KMS-compatible server.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;

use crate::{DataKey, KeyProvider, SecretsError};

#[derive(Debug, Clone)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
}

impl AwsKms {
    pub async fn new(endpoint: Option<&str>, region: Option<&str>) -> AwsKms {
        let mut loader = aws_config::from_env();
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_string()));
        }
        AwsKms { client: aws_sdk_kms::Client::new(&loader.load().await) }
    }

    pub fn from_client(client: aws_sdk_kms::Client) -> AwsKms {
        AwsKms { client }
    }

    pub fn client(&self) -> &aws_sdk_kms::Client {
        &self.client
    }
}

fn provider_error(key_id: &str, e: impl std::error::Error) -> SecretsError {
    // The SDK's Display is terse ("service error"); the source chain says what happened.
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    SecretsError::Provider { key_id: key_id.into(), message }
}

#[async_trait::async_trait]
impl KeyProvider for AwsKms {
    fn name(&self) -> &'static str {
        "aws-kms"
    }

    async fn generate_data_key(&self, key_id: &str, context: &str) -> Result<DataKey, SecretsError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context("tenant", context)
            .send()
            .await
            .map_err(|e| provider_error(key_id, e))?;
        let plaintext = out.plaintext().map(|b| b.as_ref().to_vec()).unwrap_or_default();
        let plaintext: [u8; 32] = plaintext.try_into().map_err(|_| SecretsError::Provider {
            key_id: key_id.into(),
            message: "KMS returned a data key that is not 256 bits".into(),
        })?;
        let wrapped = out.ciphertext_blob().map(|b| b.as_ref().to_vec()).unwrap_or_default();
        Ok(DataKey { plaintext, wrapped })
    }

    async fn unwrap_data_key(&self, key_id: &str, context: &str, wrapped: &[u8]) -> Result<[u8; 32], SecretsError> {
        let out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(wrapped.to_vec()))
            .encryption_context("tenant", context)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_invalid_ciphertext_exception() || s.is_incorrect_key_exception() => {
                    SecretsError::WrongKey { key_id: key_id.into() }
                }
                Some(s) if s.meta().code() == Some("AccessDeniedException") => {
                    SecretsError::AccessDenied { key_id: key_id.into() }
                }
                _ => provider_error(key_id, e),
            })?;
        // KMS names the key that decrypted; a data key wrapped by another key than the tenant's is refused.
        if let Some(used) = out.key_id()
            && !key_matches(key_id, used)
        {
            return Err(SecretsError::WrongKey { key_id: key_id.into() });
        }
        let key = out.plaintext().map(|b| b.as_ref().to_vec()).unwrap_or_default();
        key.try_into().map_err(|_| SecretsError::WrongKey { key_id: key_id.into() })
    }
}

/// `wanted` may be a key id, a key ARN or an alias; `used` is the ARN KMS reports.
fn key_matches(wanted: &str, used: &str) -> bool {
    wanted == used || used.ends_with(&format!("key/{wanted}")) || wanted.starts_with("alias/")
}

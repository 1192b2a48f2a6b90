#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Envelope encryption with both providers: the local key file, and AWS KMS through a real
//! KMS-compatible server (moto_server).

use std::sync::Arc;

use omnisql_secrets::testing::MotoServer;
use omnisql_secrets::{Binding, LocalKeys, Sealed, Sealer, SecretsError};

const SECRET: &str = "ghp_planted-secret-0123456789";

fn binding<'a>(tenant: &'a str) -> Binding<'a> {
    Binding { tenant, connection: "github", option: "token" }
}

fn flip_last(bytes: &mut [u8]) {
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
}

#[tokio::test]
async fn local_key_seals_and_opens_and_the_sealed_text_holds_no_plaintext() {
    let sealer = Sealer::new(Arc::new(LocalKeys::from_key([7; 32])));
    let sealed = sealer.seal("local", binding("acme"), SECRET).await.unwrap();
    let text = sealed.encode();
    assert!(!text.contains(SECRET) && !text.contains("planted"));
    let back = Sealed::decode(&text).unwrap();
    assert_eq!(sealer.open(&back, binding("acme")).await.unwrap(), SECRET);
    // Two seals of one secret differ (fresh data key and nonce each time).
    assert_ne!(sealer.seal("local", binding("acme"), SECRET).await.unwrap().encode(), text);
}

#[tokio::test]
async fn local_key_refuses_another_key_another_binding_and_tampering() {
    let sealer = Sealer::new(Arc::new(LocalKeys::from_key([7; 32])));
    let sealed = sealer.seal("local", binding("acme"), SECRET).await.unwrap();

    let other = Sealer::new(Arc::new(LocalKeys::from_key([8; 32])));
    assert!(matches!(other.open(&sealed, binding("acme")).await, Err(SecretsError::WrongKey { .. })));

    // A sealed value copied to another tenant, or to another option, does not open.
    assert!(matches!(sealer.open(&sealed, binding("globex")).await, Err(SecretsError::WrongKey { .. })));
    let other_option = Binding { tenant: "acme", connection: "github", option: "client_secret" };
    assert!(matches!(sealer.open(&sealed, other_option).await, Err(SecretsError::Tampered)));

    let mut tampered = sealed.clone();
    flip_last(&mut tampered.ciphertext);
    assert!(matches!(sealer.open(&tampered, binding("acme")).await, Err(SecretsError::Tampered)));
    let mut tampered = sealed.clone();
    flip_last(&mut tampered.wrapped_key);
    assert!(matches!(sealer.open(&tampered, binding("acme")).await, Err(SecretsError::WrongKey { .. })));
    assert!(matches!(Sealed::decode("sealed:v1:!!!"), Err(SecretsError::Malformed(_))));
}

#[tokio::test]
async fn local_key_file_is_created_once_and_reused() {
    let dir = std::env::temp_dir().join(format!("omnisql-keyfile-{}", std::process::id()));
    let path = dir.join("master.key");
    let _ = std::fs::remove_dir_all(&dir);
    let first = Sealer::new(Arc::new(LocalKeys::open_or_create(&path).unwrap()));
    let sealed = first.seal("local", binding("acme"), SECRET).await.unwrap();
    let again = Sealer::new(Arc::new(LocalKeys::open_or_create(&path).unwrap()));
    assert_eq!(again.open(&sealed, binding("acme")).await.unwrap(), SECRET);
    std::fs::write(&path, "short").unwrap();
    assert!(matches!(LocalKeys::open_or_create(&path), Err(SecretsError::KeyFileFormat { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn aws_kms_seals_and_opens_through_a_real_kms_server() {
    let kms = MotoServer::start().await.unwrap();
    let tenant_key = kms.create_key().await.unwrap();
    let other_key = kms.create_key().await.unwrap();
    let sealer = Sealer::new(Arc::new(kms.provider()));
    assert_eq!(sealer.provider(), "aws-kms");

    let sealed = sealer.seal(&tenant_key, binding("acme"), SECRET).await.unwrap();
    assert!(!sealed.encode().contains(SECRET));
    assert_eq!(sealer.open(&sealed, binding("acme")).await.unwrap(), SECRET);

    // Wrong key: the data key was wrapped by the tenant's key, not this one. (AWS answers
    // IncorrectKeyException, moto AccessDeniedException; either way nothing opens.)
    let mut wrong = sealed.clone();
    wrong.key_id = other_key.clone();
    let err = sealer.open(&wrong, binding("acme")).await.unwrap_err();
    assert!(matches!(err, SecretsError::WrongKey { .. } | SecretsError::AccessDenied { .. }), "{err}");
    assert!(err.to_string().contains(&other_key), "{err}");

    // Wrong tenant: KMS refuses the encryption context.
    let err = sealer.open(&sealed, binding("globex")).await.unwrap_err();
    assert!(matches!(err, SecretsError::WrongKey { .. }), "{err}");

    // Tampered ciphertext and tampered wrapped key.
    let mut tampered = sealed.clone();
    flip_last(&mut tampered.ciphertext);
    assert!(matches!(sealer.open(&tampered, binding("acme")).await, Err(SecretsError::Tampered)));
    let mut tampered = sealed.clone();
    flip_last(&mut tampered.wrapped_key);
    let err = sealer.open(&tampered, binding("acme")).await.unwrap_err();
    assert!(matches!(err, SecretsError::WrongKey { .. }), "{err}");

    // A key that does not exist: a clear provider error naming the key.
    let err = sealer.seal("no-such-key", binding("acme"), SECRET).await.unwrap_err();
    assert!(err.to_string().contains("no-such-key"), "{err}");
}

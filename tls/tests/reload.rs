#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A TLS listener on real sockets: certificate rotation without restart, broken files mid-rotation,
//! a client that never handshakes, and the errors for files that do not load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use omnisql_tls::{ServerTls, TlsError};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A private CA and a leaf certificate for 127.0.0.1 signed by it: (CA PEM, leaf PEM, key PEM).
fn issue() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("omnisql-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Serves `tls` on a free port: each connection that completes a handshake gets "hello".
async fn serve(tls: &ServerTls) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = Box::pin(tls.incoming(listener, &[b"h2"]).unwrap());
    tokio::spawn(async move {
        while let Some(Ok(mut conn)) = incoming.next().await {
            tokio::spawn(async move {
                let _ = conn.write_all(b"hello").await;
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

/// Connects trusting only `ca_pem`; returns the server's leaf certificate and what it said.
async fn connect(addr: std::net::SocketAddr, ca_pem: &str) -> Result<(CertificateDer<'static>, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "h2 is negotiated for gRPC");
    let mut said = String::new();
    tls.read_to_string(&mut said).await.map_err(|e| e.to_string())?;
    Ok((leaf, said))
}

fn der(pem: &str) -> CertificateDer<'static> {
    rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let dir = temp_dir("rotate");
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    let (ca1, leaf1, key1) = issue();
    std::fs::write(&cert_path, &leaf1).unwrap();
    std::fs::write(&key_path, &key1).unwrap();
    let tls = ServerTls::from_files(&cert_path, &key_path).unwrap().reload_every(Duration::from_millis(100));
    let addr = serve(&tls).await;

    let (served, said) = connect(addr, &ca1).await.unwrap();
    assert_eq!(served, der(&leaf1));
    assert_eq!(said, "hello");

    // Mid-rotation: the new certificate is written, its key not yet. The old pair keeps being served.
    let (ca2, leaf2, key2) = issue();
    std::fs::write(&cert_path, &leaf2).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (served, _) = connect(addr, &ca1).await.unwrap();
    assert_eq!(served, der(&leaf1), "a certificate without its key is not served");

    // The key arrives: the next check serves the new certificate; clients trusting only the old CA refuse it.
    std::fs::write(&key_path, &key2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        match connect(addr, &ca2).await {
            Ok((served, _)) => {
                assert_eq!(served, der(&leaf2));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "the rotated certificate was never served: {e}"),
        }
    }
    let refused = connect(addr, &ca1).await.unwrap_err();
    assert!(refused.contains("UnknownIssuer") || refused.contains("certificate"), "{refused}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_client_that_never_handshakes_does_not_hold_up_others() {
    let (ca, leaf, key) = issue();
    let tls = ServerTls::from_pem(leaf.as_bytes(), key.as_bytes()).unwrap();
    let addr = serve(&tls).await;
    // Ten connections that send nothing.
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    let (served, said) =
        tokio::time::timeout(Duration::from_secs(5), connect(addr, &ca)).await.expect("handshake stalled").unwrap();
    assert_eq!((served, said.as_str()), (der(&leaf), "hello"));
    println!("handshake beside 10 silent connections: {:?}", started.elapsed());
    drop(silent);
}

#[test]
fn files_that_do_not_load_are_refused_at_start_with_what_is_wrong() {
    let dir = temp_dir("errors");
    let (_, leaf, key) = issue();
    let (_, _, other_key) = issue();
    let write = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path
    };
    let (cert, key, other_key, junk) =
        (write("tls.crt", &leaf), write("tls.key", &key), write("other.key", &other_key), write("junk", "not pem"));

    let missing = ServerTls::from_files(dir.join("absent.crt"), &key).unwrap_err();
    assert!(matches!(missing, TlsError::Read { .. }) && missing.to_string().contains("absent.crt"), "{missing}");
    let no_cert = ServerTls::from_files(&junk, &key).unwrap_err();
    assert!(matches!(no_cert, TlsError::NoCertificate { .. }), "{no_cert}");
    let no_key = ServerTls::from_files(&cert, &junk).unwrap_err();
    assert!(matches!(no_key, TlsError::NoKey { .. }), "{no_key}");
    let mismatch = ServerTls::from_files(&cert, &other_key).unwrap_err();
    assert!(matches!(mismatch, TlsError::KeyMismatch { .. }), "{mismatch}");
    println!("{missing}\n{no_cert}\n{no_key}\n{mismatch}");
    assert!(ServerTls::from_files(&cert, &key).is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

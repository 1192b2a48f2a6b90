//! The committed CRD is what the Rust types generate, so the chart installs what the operator reads.

#[test]
fn committed_crd_is_current() {
    // Where cargo runs the test: a build shared between checkouts reads this checkout's file.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let path = std::path::Path::new(&dir).join("..").join(omnisql_operator::CRD_PATH);
    let current = omnisql_operator::crd_yaml();
    if std::env::var_os("OMNISQL_UPDATE_CRD").is_some() {
        std::fs::write(&path, &current).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "{} is stale: run `cargo run -p omnisql -- operator crd > {}` (or OMNISQL_UPDATE_CRD=1 cargo test -p omnisql-operator) and commit it",
        omnisql_operator::CRD_PATH,
        omnisql_operator::CRD_PATH
    );
    for field in ["region", "replicas", "controlPlane", "credentialsSecret", "observedGeneration", "conditions"] {
        assert!(committed.contains(field), "{field} missing from the CRD");
    }
}

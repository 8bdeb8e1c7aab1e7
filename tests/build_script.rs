//! build.rs must name only files that exist in `rerun-if-changed`: Cargo
//! treats a missing one as changed, re-runs the script and recompiles the
//! crate on every `make run` / `make test`.

use std::path::Path;

#[test]
fn every_rerun_if_changed_path_exists() {
    // OUT_DIR is target/<profile>/build/execsentry-<hash>/out; Cargo keeps
    // the script's printed lines next to it, in `output`.
    let out = Path::new(env!("OUT_DIR")).with_file_name("output");
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let watched: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("cargo:rerun-if-changed="))
        .collect();
    assert!(watched.contains(&"build.rs"), "{text}");
    for p in &watched {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
        assert!(path.exists(), "build.rs watches {p}, which does not exist");
    }
}

/// A panic in a release build aborts the whole process (see Cargo.toml):
/// no thread of a half-dead sensor keeps the fanotify group open.
#[test]
fn release_builds_abort_on_panic() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let manifest: toml::Table = text.parse().unwrap();
    let panic = manifest
        .get("profile")
        .and_then(|p| p.get("release"))
        .and_then(|r| r.get("panic"))
        .and_then(|v| v.as_str());
    assert_eq!(panic, Some("abort"));
}

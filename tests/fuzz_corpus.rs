//! Replays every committed fuzz input (`fuzz/corpus/<target>/*` and
//! `fuzz/artifacts/<target>/*`) through the fuzz targets' own bodies
//! (`fuzz/harness.rs`), on stable, so `make test` keeps every input the
//! fuzzer ever kept or crashed on from coming back. No root needed.
//!
//! A crash input stays committed once fixed: it is the regression test.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted; none when it is absent.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Runs every input of every target, catching panics so one report names
/// all failing files (with the target and a hex preview), not just the first.
fn replay(kind: &str) -> usize {
    let mut count = 0;
    let mut failures = Vec::new();
    for (target, body) in harness::TARGETS {
        for path in inputs(kind, target) {
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            count += 1;
            let outcome = std::panic::catch_unwind(|| body(&data));
            if let Err(payload) = outcome {
                let why = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{target}: {}: {why}", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} {kind} inputs fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    count
}

/// The corpora, and any crash input committed under `fuzz/artifacts/`
/// (`make fuzz` leaves one there; bench/fuzz.sh says to commit it once
/// fixed). Git history holds no crash input yet, so there is no separate
/// crash-replay test: one that replays nothing would assert nothing. The
/// corpora are never empty, so this one always runs inputs.
#[test]
fn every_committed_corpus_and_crash_input_passes() {
    // Every target has a corpus; an empty replay would prove nothing.
    for (target, _) in harness::TARGETS {
        assert!(
            !inputs("corpus", target).is_empty(),
            "fuzz/corpus/{target} is empty or missing"
        );
    }
    let corpus = replay("corpus");
    let crashes = replay("artifacts");
    eprintln!("replayed {corpus} corpus inputs and {crashes} crash inputs");
    assert!(corpus >= harness::TARGETS.len());
}

/// Hand-written hostile inputs, so the properties hold for the cases the
/// issue names even before any corpus exists.
#[test]
fn hostile_seeds_pass_every_target() {
    let seeds: &[&[u8]] = &[
        b"",
        b"\0",
        b"\n\n\n",
        b"\x1b[31m\x1b]0;title\x07",
        "\u{202e}evil\u{2066}".as_bytes(),
        b"\xff\xfe\xc3\x28\\x41\\",
        b"a\"b]c|d=e\\",
        br#"{"process":{"name":"x"}}"#,
        b"((((((((((((((((((((((((((((((((",
        b"1234 (evil) name) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55442",
        b"36 35 98:0 /mnt1 /mnt\\0402 rw,noexec - ext3 /dev/root rw",
    ];
    for (target, body) in harness::TARGETS {
        for s in seeds {
            let r = std::panic::catch_unwind(|| body(s));
            assert!(r.is_ok(), "{target} on {s:?}");
        }
    }
}

/// Deeply nested rule queries must be refused with an error, not overflow
/// the stack: a rule file is input an operator may get from anywhere.
#[test]
fn deeply_nested_query_is_an_error_not_a_crash() {
    for depth in [16usize, 1_000, 100_000] {
        let text = format!(
            "[rule]\nid = \"deep\"\nname = \"deep\"\ndescription = \"d\"\n\
             severity = \"low\"\nrisk_score = 21\nquery = '''\n\
             process where {}process.name == \"x\"{}\n'''\n",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        let r = execsentry::rules::RuleSet::from_sources(&[("deep.toml".into(), text.clone())]);
        match &r {
            Ok(set) => eprintln!("depth {depth}: loaded ({} rules)", set.len()),
            Err(e) => eprintln!("depth {depth}: refused: {}", e.errors.join("; ")),
        }
        if depth == 16 {
            assert!(r.is_ok(), "a shallow query must load: {:?}", r.err());
        }
        harness::rules_parse(text.as_bytes());
    }
}

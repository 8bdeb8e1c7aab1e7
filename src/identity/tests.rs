//! Unit tests of the identity shell: the pure `identify` over synthetic
//! ELF files, and `Identifier` over this test process's own `/proc`.

use std::path::Path;
use std::time::Instant;

use super::testelf::{Build, build};
use super::*;

fn shipped_tools() -> ToolTable {
    let text = include_str!("../../rules/tools.toml");
    ToolTable::from_sources(&[("tools.toml".into(), text.into())]).unwrap()
}

#[test]
fn identify_names_the_tool_of_every_variant() {
    let tools = shipped_tools();
    for (is_64, big, inline) in [
        (true, false, true),
        (false, true, false),
        (false, false, true),
    ] {
        let f = build(&Build {
            is_64,
            big,
            inline,
            ..Build::default()
        });
        let id = identify(&f[..], &tools).unwrap().expect("identified");
        assert_eq!(id.tool.as_deref(), Some("docker"));
        let go = id.go.unwrap();
        assert_eq!(go.main, "github.com/docker/cli/cmd/docker");
        assert_eq!(go.version, "go1.22.1");
    }
}

#[test]
fn unknown_main_packages_have_go_facts_but_no_tool() {
    let f = build(&Build {
        main: "example.com/hello",
        ..Build::default()
    });
    let id = identify(&f[..], &shipped_tools()).unwrap().unwrap();
    assert_eq!(id.tool, None);
    assert_eq!(id.go.unwrap().main, "example.com/hello");
}

#[test]
fn scripts_and_foreign_files_are_not_errors() {
    let tools = shipped_tools();
    assert_eq!(identify(&b"#!/bin/sh\necho hi\n"[..], &tools), Ok(None));
    assert_eq!(identify(&b""[..], &tools), Ok(None));
}

#[test]
fn fixtures_under_tests_data_parse_as_documented() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/identity");
    let tools = shipped_tools();
    let id = |name: &str| {
        let data = std::fs::read(format!("{dir}/{name}")).expect(name);
        identify(&data[..], &tools)
    };
    let tool = |name: &str| id(name).unwrap().and_then(|x| x.tool);
    assert_eq!(tool("go-le64-inline.elf").as_deref(), Some("docker"));
    assert_eq!(tool("go-be32-pointer.elf").as_deref(), Some("docker"));
    assert_eq!(
        tool("go-kubectl-no-sections.elf").as_deref(),
        Some("kubectl")
    );
    assert_eq!(id("not-go.elf"), Ok(None));
    assert!(id("truncated.elf").is_err());
    assert!(id("hostile-shoff.elf").is_err());
    assert!(id("hostile-length.elf").is_err());
}

/// A fake `/proc` whose `<pid>/exe` links to a synthetic Go binary, as
/// the magic link resolves to the mapped file.
fn fake_proc(main: &'static str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("gdocker");
    std::fs::write(
        &bin,
        build(&Build {
            main,
            ..Build::default()
        }),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("42")).unwrap();
    std::os::unix::fs::symlink(&bin, dir.path().join("42/exe")).unwrap();
    (dir, bin)
}

/// A small fuzz loop (the parser is pure): random byte mutations of every
/// synthetic variant never panic, and reads stay within the budget.
#[test]
fn random_mutations_never_panic() {
    let tools = shipped_tools();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (is_64, big, inline, no_sections) in [
        (true, false, true, false),
        (false, true, false, false),
        (true, true, false, true),
    ] {
        let f = build(&Build {
            is_64,
            big,
            inline,
            no_sections,
            ..Build::default()
        });
        for _ in 0..3000 {
            let mut g = f.clone();
            for _ in 0..(next() % 8 + 1) {
                let i = (next() % g.len() as u64) as usize;
                g[i] = next() as u8;
            }
            let _ = identify(&g[..], &tools);
        }
    }
}

#[test]
fn identifier_caches_by_file_and_counts() {
    let cfg = IdentityConfig {
        hash: true,
        ..IdentityConfig::default()
    };
    let mut idf = Identifier::new(cfg, shipped_tools());
    let (root, bin) = fake_proc("github.com/docker/cli/cmd/docker");
    let mut ev = Event::default();
    idf.fill(root.path(), 42, true, None, &mut ev);
    let exe = ev.execsentry.exe.clone().expect("identified");
    assert_eq!(exe.tool.as_deref(), Some("docker"));
    let sha = ev.process.hash.and_then(|h| h.sha256).expect("hashed");
    assert_eq!(sha.len(), 64);
    let first = idf.lookup(root.path(), 42).unwrap();
    let s = idf.stats();
    assert_eq!((s.hits, s.misses, s.entries, s.parse_errors), (1, 1, 1, 0));
    // Rewritten in place (same inode): a new mtime makes it a new key.
    std::fs::write(
        &bin,
        build(&Build {
            main: "k8s.io/kubernetes/cmd/kubectl",
            ..Build::default()
        }),
    )
    .unwrap();
    let f = File::options().write(true).open(&bin).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    let second = idf.lookup(root.path(), 42).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(
        second.exe.as_ref().unwrap().tool.as_deref(),
        Some("kubectl")
    );
    assert!(idf.lookup(root.path(), 43).is_none());
    assert_eq!(idf.stats().unreadable, 1);
}

#[test]
fn file_known_at_exec_is_identified_after_the_process_is_gone() {
    let mut idf = Identifier::new(IdentityConfig::default(), shipped_tools());
    let (root, bin) = fake_proc("github.com/docker/cli/cmd/docker");
    let mut ev = Event::default();
    idf.fill(root.path(), 42, true, None, &mut ev);
    let key = FileKey::from(&std::fs::metadata(&bin).unwrap());
    // Pid 43 has no /proc entry: only the key finds the file.
    let mut ev = Event::default();
    idf.fill(root.path(), 43, true, Some(key), &mut ev);
    let tool = ev.execsentry.exe.and_then(|e| e.tool);
    assert_eq!(tool.as_deref(), Some("docker"));
    let s = idf.stats();
    assert_eq!((s.hits, s.misses, s.unreadable), (1, 1, 0));
}

#[test]
fn large_files_are_identified_but_not_hashed() {
    let cfg = IdentityConfig {
        hash: true,
        max_file_bytes: 100,
        ..IdentityConfig::default()
    };
    let mut idf = Identifier::new(cfg, shipped_tools());
    let (root, _bin) = fake_proc("github.com/docker/cli/cmd/docker");
    let k = idf.lookup(root.path(), 42).unwrap();
    assert!(k.exe.is_some());
    assert_eq!(k.sha256, None);
}

#[test]
fn disabled_identifier_reads_nothing() {
    let mut idf = Identifier::disabled();
    let mut ev = Event::default();
    idf.fill(Path::new("/proc"), std::process::id(), true, None, &mut ev);
    assert_eq!(ev.execsentry.exe, None);
    assert_eq!(idf.stats(), CacheStats::default());
}

#[test]
fn sha256_of_a_known_file_and_size_bound() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("abc");
    std::fs::write(&p, b"abc").unwrap();
    let f = File::open(&p).unwrap();
    assert_eq!(
        sha256_file(&f, 3).as_deref(),
        Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    assert_eq!(sha256_file(&f, 4), None, "file shorter than keyed: no hash");
}

#[test]
fn config_validation() {
    assert!(IdentityConfig::default().validate().is_ok());
    let bad = IdentityConfig {
        cache_size: 0,
        ..IdentityConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().0, "cache_size");
}

/// Reported, loosely bounded: the per-exec cost of a cache hit.
#[test]
fn cache_hit_is_cheap() {
    let mut idf = Identifier::new(IdentityConfig::default(), shipped_tools());
    let me = std::process::id();
    let t = Instant::now();
    idf.lookup(Path::new("/proc"), me);
    let miss = t.elapsed();
    let n = 20_000u32;
    let t = Instant::now();
    for _ in 0..n {
        idf.lookup(Path::new("/proc"), me);
    }
    let per_hit = t.elapsed() / n;
    eprintln!("identity: miss {miss:?} (this binary), hit {per_hit:?}");
    assert_eq!(idf.stats().hits, u64::from(n));
    assert!(per_hit.as_micros() < 200, "{per_hit:?}");
}

/// The figures for `make bench` (run with `--release -- --ignored
/// --nocapture`): cost per new executable (miss: open, parse, optional
/// hash) and per cache hit, on this host's real binaries.
#[test]
#[ignore]
fn measure() {
    let time = |label: &str, n: u32, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        eprintln!("{label}: {:?}", t.elapsed() / n);
    };
    let me = std::process::id();
    let proc_root = Path::new("/proc");
    for hash in [false, true] {
        for target in ["/bin/true", "/usr/bin/docker", "/usr/local/bin/docker"] {
            if !Path::new(target).exists() {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("1")).unwrap();
            std::os::unix::fs::symlink(target, dir.path().join("1/exe")).unwrap();
            let cfg = IdentityConfig {
                hash,
                ..IdentityConfig::default()
            };
            let tools = shipped_tools();
            time(&format!("miss {target} hash={hash}"), 5, &mut || {
                let mut idf = Identifier::new(cfg.clone(), tools.clone());
                assert!(idf.lookup(dir.path(), 1).is_some());
            });
        }
    }
    let mut idf = Identifier::new(IdentityConfig::default(), shipped_tools());
    idf.lookup(proc_root, me);
    time(
        "hit (stat of /proc/<pid>/exe + lookup)",
        200_000,
        &mut || {
            idf.lookup(proc_root, me);
        },
    );
    let path = format!("/proc/{me}/exe");
    time(
        "for comparison: bare stat(2) of the link",
        200_000,
        &mut || {
            let _ = nix::sys::stat::stat(path.as_str());
        },
    );
    let reader = crate::enrich::ProcReader::new(crate::procfs::ProcFs::host(), 128 * 1024);
    time(
        "for comparison: the /proc reads of one exec",
        20_000,
        &mut || {
            let _ = reader.read(me, true, None);
        },
    );
    time("for comparison: open + fstat + close", 200_000, &mut || {
        let f = File::open(&path).unwrap();
        let _ = f.metadata().unwrap();
    });
}

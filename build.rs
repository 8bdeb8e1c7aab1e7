//! Build script: the long version string `execsentry --version` prints.
//!
//! `EXECSENTRY_VERSION` = "<Cargo.toml version> (git <commit>, features: <list>)".
//! The commit comes from `git rev-parse` when building from a checkout; a
//! source tarball without `.git` can pass it in `EXECSENTRY_GIT_COMMIT`
//! (packagers do), otherwise it reads "unknown". Nothing here fails the
//! build: a missing git is not a reason to refuse to compile a sensor.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Where git keeps `name` (HEAD, packed-refs, refs/heads/x), absolute.
fn git_path(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(git(&["rev-parse", "--git-path", name])?);
    if p.is_absolute() {
        return Some(p);
    }
    Some(PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?).join(p))
}

fn main() {
    println!("cargo:rerun-if-env-changed=EXECSENTRY_GIT_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");

    let commit = std::env::var("EXECSENTRY_GIT_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());

    // Re-run when HEAD moves (checkout, commit), not on every source edit:
    // HEAD names the branch, the branch's ref file (or packed-refs) holds
    // the commit. `--git-path` resolves each where git keeps it (in a
    // worktree the refs live in the common dir). Only files that exist are
    // named: Cargo treats a missing one as changed and re-runs this script
    // (and recompiles the crate) on every build. A ref that later moves into
    // packed-refs disappears, which also re-runs it.
    let mut watched = vec![git_path("HEAD"), git_path("packed-refs")];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git_path(&r));
    }
    for p in watched.into_iter().flatten().filter(|p| p.is_file()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    // Cargo sets CARGO_FEATURE_<NAME> for every enabled feature of this crate.
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| {
            k.strip_prefix("CARGO_FEATURE_")
                .map(|f| f.to_lowercase().replace('_', "-"))
        })
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(",")
    };

    // crt-static tells a static build apart from a dynamic one at a glance.
    let linkage = if std::env::var("CARGO_CFG_TARGET_FEATURE")
        .unwrap_or_default()
        .split(',')
        .any(|f| f == "crt-static")
    {
        "static"
    } else {
        "dynamic"
    };

    println!(
        "cargo:rustc-env=EXECSENTRY_VERSION={} (git {}, features: {}, {} {})",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
        commit,
        features,
        std::env::var("TARGET").unwrap_or_default(),
        linkage,
    );
}

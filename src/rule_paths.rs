//! Which rule paths are loaded, and when a missing path or an empty rule
//! set stops the sensor: the start rules of the README's exit-code table.
//!
//! A sensor that runs with zero rules watches nothing while it reports
//! ready, so every case that ends there is an error (exit code 2), and a
//! path the operator typed on the command line must exist. Only a
//! configured path may be missing (a package ships `/etc/execsentry/rules.d`
//! optional), and only while another one is there.
//!
//! [`plan`] is the decision, pure; [`load`] does the I/O around it.

use std::path::{Path, PathBuf};

use crate::rules::RuleSet;

/// Where the rule paths came from: the command line (`--rules`, the
/// arguments of `rules check`) or the config file (`sensor.rules`, or the
/// built-in default when there is no config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cli,
    Config,
}

/// Why the rules cannot be used; each is bad input (exit code 2).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulePathError {
    #[error("rule path {} (given on the command line) does not exist", .0.display())]
    MissingCli(PathBuf),
    #[error("no rule path is configured (sensor.rules is empty)")]
    NoPaths,
    #[error("none of the configured rule paths exists: {}", join(.0))]
    AllMissing(Vec<PathBuf>),
    #[error("zero rules loaded from {}: a sensor without rules would watch nothing", join(.0))]
    ZeroRules(Vec<PathBuf>),
    /// A broken rule file, or a rule file refused for its ownership; the
    /// text names `file:line:col` (or the file) and what is wrong.
    #[error("{0}")]
    Invalid(String),
}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The paths to load and what to warn about.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub load: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// Decides from `paths`, their origin and which of them exist.
pub fn plan(
    paths: &[PathBuf],
    origin: Origin,
    exists: impl Fn(&Path) -> bool,
) -> Result<Plan, RulePathError> {
    if paths.is_empty() {
        return Err(RulePathError::NoPaths);
    }
    let mut load = Vec::new();
    let mut missing = Vec::new();
    for p in paths {
        if exists(p) {
            load.push(p.clone());
        } else if origin == Origin::Cli {
            return Err(RulePathError::MissingCli(p.clone()));
        } else {
            missing.push(p.clone());
        }
    }
    if load.is_empty() {
        return Err(RulePathError::AllMissing(missing));
    }
    let warnings = missing
        .iter()
        .map(|p| {
            format!(
                "configured rule path {} does not exist; skipped",
                p.display()
            )
        })
        .collect();
    Ok(Plan { load, warnings })
}

/// After loading: an empty rule set is an error whatever the paths were
/// (empty directories, every rule disabled or skipped as unsupported).
pub fn check_loaded(count: usize, loaded_from: &[PathBuf]) -> Result<(), RulePathError> {
    if count == 0 {
        return Err(RulePathError::ZeroRules(loaded_from.to_vec()));
    }
    Ok(())
}

/// Loads the rules under the start rules, logging each warning.
pub fn load(paths: &[PathBuf], origin: Origin) -> Result<RuleSet, RulePathError> {
    load_with(paths, origin, crate::rules::Unsupported::Error)
}

/// [`load`] under `sensor.unsupported_rules`: with `Skip`, each file left
/// out is logged with its `file:line:col` reasons.
pub fn load_with(
    paths: &[PathBuf],
    origin: Origin,
    mode: crate::rules::Unsupported,
) -> Result<RuleSet, RulePathError> {
    let plan = plan(paths, origin, |p| p.exists())?;
    for w in &plan.warnings {
        log::warn!("{w}");
    }
    crate::privilege::check_owned_by_root(&plan.load)
        .map_err(|e| RulePathError::Invalid(format!("{e:#}")))?;
    let set =
        RuleSet::load_with(&plan.load, mode).map_err(|e| RulePathError::Invalid(e.to_string()))?;
    for s in set.skipped() {
        log::warn!(
            "skipped rule file {} (unsupported_rules = \"skip\"): {}",
            s.file,
            s.reasons.join("; ")
        );
    }
    check_loaded(set.len(), &plan.load)?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    fn only(existing: &'static [&'static str]) -> impl Fn(&Path) -> bool {
        move |p| existing.iter().any(|e| Path::new(e) == p)
    }

    #[test]
    fn every_path_present_loads_all_without_warning() {
        for origin in [Origin::Cli, Origin::Config] {
            let got = plan(&paths(&["/a", "/b"]), origin, only(&["/a", "/b"])).unwrap();
            assert_eq!(got.load, paths(&["/a", "/b"]));
            assert!(got.warnings.is_empty());
        }
    }

    #[test]
    fn a_missing_command_line_path_is_an_error_even_beside_good_ones() {
        let err = plan(&paths(&["/a", "/typo"]), Origin::Cli, only(&["/a"])).unwrap_err();
        assert_eq!(err, RulePathError::MissingCli("/typo".into()));
        assert!(err.to_string().contains("/typo"));
    }

    #[test]
    fn a_missing_configured_path_is_a_warning_while_another_exists() {
        let got = plan(&paths(&["/gone", "/a"]), Origin::Config, only(&["/a"])).unwrap();
        assert_eq!(got.load, paths(&["/a"]));
        assert_eq!(got.warnings.len(), 1);
        assert!(got.warnings[0].contains("/gone"), "{:?}", got.warnings);
    }

    #[test]
    fn every_configured_path_missing_is_an_error_naming_them() {
        let err = plan(&paths(&["/x", "/y"]), Origin::Config, only(&[])).unwrap_err();
        assert_eq!(err, RulePathError::AllMissing(paths(&["/x", "/y"])));
        let text = err.to_string();
        assert!(text.contains("/x") && text.contains("/y"), "{text}");
    }

    #[test]
    fn no_path_at_all_is_an_error() {
        for origin in [Origin::Cli, Origin::Config] {
            assert_eq!(
                plan(&[], origin, only(&[])).unwrap_err(),
                RulePathError::NoPaths
            );
        }
    }

    #[test]
    fn zero_rules_loaded_is_an_error_and_one_is_enough() {
        let from = paths(&["/empty"]);
        assert_eq!(
            check_loaded(0, &from).unwrap_err(),
            RulePathError::ZeroRules(from.clone())
        );
        assert!(check_loaded(1, &from).is_ok());
    }

    #[test]
    fn load_of_an_empty_directory_is_zero_rules() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&[dir.path().to_path_buf()], Origin::Cli).unwrap_err();
        assert!(matches!(err, RulePathError::ZeroRules(_)), "{err}");
    }
}

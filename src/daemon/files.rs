//! The tamper check of rule and configuration files: they decide what the
//! sensor reports, so they must stay writable by root alone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::privilege;

/// How often rule and config files are checked for non-root write access.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(30);

pub struct FileCheck {
    pub config: Option<PathBuf>,
    /// The last finding, so each is alerted once.
    finding: Option<String>,
    last: Instant,
}

impl FileCheck {
    pub fn new(config: Option<PathBuf>) -> Self {
        FileCheck {
            config,
            finding: None,
            last: Instant::now(),
        }
    }

    /// A new finding when the check is due and found one not yet reported.
    pub fn due(&mut self, rule_paths: &[PathBuf]) -> Option<String> {
        if self.last.elapsed() < FILE_CHECK_EVERY {
            return None;
        }
        self.last = Instant::now();
        let mut paths = rule_paths.to_vec();
        paths.extend(self.config.clone());
        paths.retain(|p| p.exists());
        let finding = privilege::check_owned_by_root(&paths)
            .err()
            .map(|e| e.to_string());
        let new = finding.clone().filter(|f| self.finding.as_ref() != Some(f));
        self.finding = finding;
        new
    }
}

//! SIGHUP: reopen the output file, re-read the user table, reload the rules
//! (and the rule paths from the config). A broken file keeps the running
//! rule set.

use std::path::PathBuf;

use super::files::FileCheck;
use super::setup::{check_enforcement, load_rules};
use crate::config::Config;
use crate::enrich;
use crate::pipeline::Pipeline;
use crate::sink::Outputs;

pub struct Reload {
    pub cli_rules: Option<Vec<PathBuf>>,
    /// The rule paths in force (checked for tampering, reloaded on SIGHUP).
    pub rule_paths: Vec<PathBuf>,
    pub enforce: bool,
}

impl Reload {
    pub fn apply(&mut self, pipeline: &mut Pipeline, outputs: &mut Outputs, files: &mut FileCheck) {
        outputs.reopen();
        if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
            pipeline.host.users = enrich::parse_passwd(&text);
        }
        // The config is read once: its rule paths are what gets reloaded.
        let paths = match (&self.cli_rules, &files.config) {
            (Some(r), _) => r.clone(),
            (None, Some(path)) => match Config::load(path) {
                Ok(c) => c.sensor.rules,
                Err(e) => {
                    log::error!("reload: {e}; keeping the running configuration");
                    return;
                }
            },
            (None, None) => Config::default().sensor.rules,
        };
        match load_rules(&paths).and_then(|r| {
            check_enforcement(&r, self.enforce)?;
            Ok(r)
        }) {
            Ok(r) => {
                log::info!("reloaded {} rules", r.len());
                pipeline.replace_rules(r);
                self.rule_paths = paths;
            }
            Err(e) => log::error!("reload: {e:#}; keeping the running rule set"),
        }
    }
}

//! SIGHUP. The whole new configuration and rule set are checked before
//! anything changes: an invalid one keeps everything in force and the log
//! says why. What can change without reopening kernel sources is applied:
//! rules, outputs, container metadata, identity (and its `tools.toml`), the
//! stats interval, the user table. What cannot (capture mode, enforcement,
//! the argv and table bounds, the environment variables captured) is
//! logged as needing a restart and keeps its
//! running value. Nothing slow runs on the loop: a changed syslog sink,
//! whose collector's name may need resolving, is built on a helper thread
//! and put in place by [`Reload::poll`].

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Duration;

use anyhow::Result;

use super::setup::{CliOverrides, check_enforcement, load_rules_with};
use crate::config::{Config, SensorConfig};
use crate::enrich;
use crate::identity::Identifier;
use crate::pipeline::Pipeline;
use crate::rules::RuleSet;
use crate::sink::{Outputs, SyslogSink};

pub struct Reload {
    config_path: Option<PathBuf>,
    cli: CliOverrides,
    /// The configuration in force.
    running: Config,
    /// A syslog sink being built off the loop.
    pending_syslog: Option<Receiver<Result<SyslogSink, String>>>,
}

/// What a reload changes besides the pipeline and outputs.
pub struct Applied {
    pub stats_every: Duration,
}

impl Reload {
    pub fn new(config_path: Option<PathBuf>, cli: CliOverrides, running: Config) -> Self {
        Reload {
            config_path,
            cli,
            running,
            pending_syslog: None,
        }
    }

    /// The rule paths in force (checked for tampering).
    pub fn rule_paths(&self) -> &[PathBuf] {
        &self.running.sensor.rules
    }

    /// SIGHUP. Returns what the loop applies itself, or `None` when the
    /// new configuration was refused.
    pub fn apply(
        &mut self,
        pipeline: &mut Pipeline,
        outputs: &mut Outputs,
        registry: &mio::Registry,
    ) -> Option<Applied> {
        outputs.reopen();
        if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
            pipeline.host.users = enrich::parse_passwd(&text);
        }
        let file = match &self.config_path {
            Some(path) => match Config::load(path) {
                Ok(c) => c,
                Err(e) => {
                    log::error!("reload: {e}; keeping the running rule set and configuration");
                    return None;
                }
            },
            None => Config::default(),
        };
        let mut new = self.cli.apply(&file);
        keep_restart_only(&self.running.sensor, &mut new.sensor);
        let (rules, identity) = match checked(&new) {
            Ok(v) => v,
            Err(e) => {
                log::error!("reload: {e:#}; keeping the running rule set and configuration");
                return None;
            }
        };
        log::info!("reloaded {} rules", rules.len());
        pipeline.replace_rules(rules);
        pipeline.identity = identity;
        if new.metadata != self.running.metadata {
            pipeline.metadata = crate::metadata::Metadata::new(&new.metadata);
        }
        outputs.reconfigure_local(
            registry,
            &self.running.output,
            &new.output,
            new.sensor.emit_events,
        );
        if new.output.syslog != self.running.output.syslog {
            self.build_syslog(&new, outputs, registry);
        }
        let applied = Applied {
            stats_every: Duration::from_secs(new.sensor.stats_interval.max(1)),
        };
        self.running = new;
        Some(applied)
    }

    fn build_syslog(&mut self, new: &Config, outputs: &mut Outputs, registry: &mio::Registry) {
        if !new.output.syslog.enabled {
            self.pending_syslog = None;
            outputs.replace_syslog(registry, None);
            return;
        }
        let cfg = new.output.syslog.clone();
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("syslog-resolve".into())
            .spawn(move || {
                // Resolving needs no capability; this thread holds none.
                let _ = crate::privilege::drop_all_in_this_thread();
                let _ = tx.send(SyslogSink::new(&cfg).map_err(|e| e.to_string()));
            });
        match spawned {
            Ok(_) => self.pending_syslog = Some(rx),
            Err(e) => log::error!("reload: syslog output not changed: {e}"),
        }
    }

    /// From housekeeping: puts a syslog sink built since the reload in
    /// place. A failure keeps the running sink, and says why.
    pub fn poll(&mut self, outputs: &mut Outputs, registry: &mio::Registry) {
        let Some(rx) = &self.pending_syslog else {
            return;
        };
        match rx.try_recv() {
            Ok(Ok(sink)) => {
                outputs.replace_syslog(registry, Some(sink));
                log::info!("reload: syslog output changed");
                self.pending_syslog = None;
            }
            Ok(Err(e)) => {
                log::error!("reload: syslog output: {e}; keeping the running one");
                self.pending_syslog = None;
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => self.pending_syslog = None,
        }
    }
}

/// The new rule set and identity tables, each checked, or the first error.
fn checked(new: &Config) -> Result<(RuleSet, Identifier)> {
    let rules = load_rules_with(&new.sensor.rules, new.sensor.unsupported_rules)?;
    check_enforcement(&rules, new.sensor.enforce)?;
    let identity = Identifier::from_config(&new.identity, &new.sensor.rules)?;
    Ok((rules, identity))
}

/// PURE. Settings tied to kernel sources and bounds opened at start keep
/// their running values; each change asked for is logged as needing a
/// restart. Returns the names of those kept.
pub fn keep_restart_only(running: &SensorConfig, new: &mut SensorConfig) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($field:ident, $name:literal) => {
            if new.$field != running.$field {
                log::warn!(
                    "reload: sensor.{} changed ({:?} -> {:?}) and needs a restart; keeping {:?}",
                    $name,
                    running.$field,
                    new.$field,
                    running.$field
                );
                new.$field = running.$field.clone();
                kept.push($name);
            }
        };
    }
    keep!(capture, "capture");
    keep!(enforce, "enforce");
    keep!(max_args_bytes, "max_args_bytes");
    keep!(table_size, "table_size");
    // The capture sources decide at start whether to read envp.
    keep!(capture_env_vars, "capture_env_vars");
    keep!(kprobe_ring_pages, "kprobe_ring_pages");
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_and_enforce_keep_their_running_values() {
        let running = SensorConfig::default();
        let mut new = SensorConfig {
            capture: "proc".into(),
            enforce: true,
            stats_interval: 7,
            ..SensorConfig::default()
        };
        assert_ne!(running.capture, new.capture, "the default is auto");
        let kept = keep_restart_only(&running, &mut new);
        assert_eq!(kept, ["capture", "enforce"]);
        assert_eq!(new.capture, running.capture);
        assert!(!new.enforce);
        assert_eq!(new.stats_interval, 7, "reloadable settings change");
    }
}

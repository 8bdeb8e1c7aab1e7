//! execsentry's entry point: parse the CLI, set up logging, dispatch, and map
//! errors to exit codes (0 ok, 1 failure, 2 bad input: config, rules,
//! replay lines; 3 the kernel capture could not be set up).

use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use execsentry::cli::{self, Cli, Command, ConfigAction, RulesAction};
use execsentry::config::Config;
use execsentry::daemon::{self, BadInput, RunOptions, SetupError};
use execsentry::rules::{self, RuleSet};
use execsentry::sink::tail;

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("execsentry: error: {e:#}");
            if e.downcast_ref::<SetupError>().is_some() {
                ExitCode::from(daemon::EXIT_SETUP as u8)
            } else if e.downcast_ref::<BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            config,
            output,
            rules,
            events,
            capture,
            control,
        } => {
            let (mut cfg, config_path) = load_config(config.as_deref())?;
            if let Some(c) = capture {
                cfg.sensor.capture = c.as_str().to_string();
            }
            daemon::run(RunOptions {
                config: cfg,
                config_path,
                cli_rules: (!rules.is_empty()).then_some(rules),
                cli_stdout: output.is_some(),
                cli_events: events,
                cli_capture: capture.map(|c| c.as_str().to_string()),
                control,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            input,
            rules,
            config,
        } => replay(&input, rules, config.as_deref()),
        Command::Rules { action } => match action {
            RulesAction::Check { paths } => {
                let set = load_rules_or_default(paths)?;
                println!("ok: {} rules", set.len());
                Ok(ExitCode::SUCCESS)
            }
            RulesAction::Test { paths } => rules_test(load_rules_or_default(paths)?),
        },
        Command::Config {
            action: ConfigAction::Check { file },
        } => {
            let path = file.unwrap_or_else(|| PathBuf::from(cli::DEFAULT_CONFIG));
            let cfg = Config::load(&path).map_err(|e| BadInput(e.to_string()))?;
            execsentry::privilege::check_owned_by_root(std::slice::from_ref(&path))
                .map_err(|e| BadInput(e.to_string()))?;
            print!("{}", cfg.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { socket, json } => {
            let st = execsentry::status::query(&socket)
                .with_context(|| "is the sensor running? (status needs root)")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", st.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Debug(a) => Ok(ExitCode::from(execsentry::capture::kprobe::debug::run(&a)?)),
        Command::Tail { socket, json } => {
            let stdout = io::stdout();
            let color = stdout.is_terminal();
            tail::tail(&socket, json, stdout.lock(), color)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An explicit `--config` must exist; the default path is optional so the
/// sensor also runs from a checkout.
fn load_config(path: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
    match path {
        Some(p) => Ok((
            Config::load(p).map_err(|e| BadInput(e.to_string()))?,
            Some(p.to_path_buf()),
        )),
        None => {
            let p = Path::new(cli::DEFAULT_CONFIG);
            if p.exists() {
                Ok((
                    Config::load(p).map_err(|e| BadInput(e.to_string()))?,
                    Some(p.to_path_buf()),
                ))
            } else {
                log::info!("{} not found; using built-in defaults", p.display());
                Ok((Config::default(), None))
            }
        }
    }
}

fn load_rules_or_default(paths: Vec<PathBuf>) -> Result<RuleSet> {
    let paths = if paths.is_empty() {
        load_config(None)?.0.sensor.rules
    } else {
        paths
    };
    daemon::load_rules(&paths).map_err(|e| BadInput(format!("{e:#}")).into())
}

fn replay(input: &Path, rules: Vec<PathBuf>, config: Option<&Path>) -> Result<ExitCode> {
    let rule_paths = if rules.is_empty() {
        load_config(config)?.0.sensor.rules
    } else {
        rules
    };
    let set = daemon::load_rules(&rule_paths).map_err(|e| BadInput(format!("{e:#}")))?;
    let reader: Box<dyn BufRead> = if input == Path::new("-") {
        Box::new(BufReader::new(io::stdin()))
    } else {
        Box::new(BufReader::new(
            std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?,
        ))
    };
    let stats = rules::replay(&set, reader, io::stdout().lock(), io::stderr().lock())?;
    if stats.bad_lines > 0 {
        eprintln!(
            "execsentry: {} of {} lines could not be read",
            stats.bad_lines, stats.lines
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn rules_test(set: RuleSet) -> Result<ExitCode> {
    let outcomes = set.run_tests();
    let mut out = io::stdout().lock();
    let mut failed = 0;
    for o in &outcomes {
        if !o.passed {
            failed += 1;
        }
        writeln!(
            out,
            "{:4}  {:45} {:>3}  {}",
            if o.passed { "ok" } else { "FAIL" },
            o.rule_id,
            o.case,
            o.detail
        )?;
    }
    writeln!(out, "{} passed, {} failed", outcomes.len() - failed, failed)?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Diagnostics go to stderr (journald under systemd); alerts never do.
fn init_logging() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::max_level()
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!(
                    "execsentry: {}: {}",
                    r.level().as_str().to_lowercase(),
                    r.args()
                );
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let level = match std::env::var("EXECSENTRY_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("warn") => log::LevelFilter::Warn,
        _ => log::LevelFilter::Info,
    };
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(level));
}

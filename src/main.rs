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
use execsentry::identity::ToolsError;
use execsentry::rule_paths::{self, Origin, RulePathError};
use execsentry::rules::{self, RuleSet};
use execsentry::sink::tail;

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("execsentry: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The README's exit-code table: whichever cause sits anywhere in the
/// error's chain decides, so added context never changes the code.
fn exit_code(e: &anyhow::Error) -> u8 {
    let any = |f: &dyn Fn(&(dyn std::error::Error + 'static)) -> bool| e.chain().any(f);
    if any(&|c| c.is::<SetupError>()) {
        daemon::EXIT_SETUP as u8
    } else if any(&|c| c.is::<BadInput>() || c.is::<RulePathError>() || c.is::<ToolsError>()) {
        2
    } else {
        1
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
            // `--rules` paths must all exist; the daemon then loads them.
            if !rules.is_empty() {
                rule_paths::plan(&rules, Origin::Cli, Path::exists)?;
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
            RulesAction::Check {
                paths,
                summary: false,
            } => {
                let set = load_rules_or_default(paths)?;
                println!("ok: {} rules", set.len());
                Ok(ExitCode::SUCCESS)
            }
            RulesAction::Check {
                paths,
                summary: true,
            } => rules_summary(paths),
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

/// The rules given on the command line, else the configured ones, under
/// the start rules of [`rule_paths`] and `sensor.unsupported_rules`.
fn load_rules_cli_or_config(cli: Vec<PathBuf>, config: Option<&Path>) -> Result<RuleSet> {
    let cfg = load_config(config)?.0;
    let (paths, origin) = if cli.is_empty() {
        (cfg.sensor.rules, Origin::Config)
    } else {
        (cli, Origin::Cli)
    };
    Ok(rule_paths::load_with(
        &paths,
        origin,
        cfg.sensor.unsupported_rules,
    )?)
}

fn load_rules_or_default(paths: Vec<PathBuf>) -> Result<RuleSet> {
    load_rules_cli_or_config(paths, None)
}

/// `rules check --summary`: loads every file that can be loaded and says
/// what was left out and why.
fn rules_summary(paths: Vec<PathBuf>) -> Result<ExitCode> {
    let cfg = load_config(None)?.0;
    let paths = if paths.is_empty() {
        cfg.sensor.rules.clone()
    } else {
        paths
    };
    execsentry::privilege::check_owned_by_root(&paths).map_err(|e| BadInput(e.to_string()))?;
    let mut out = io::stdout().lock();
    match RuleSet::load_with(&paths, rules::Unsupported::Skip) {
        Ok(set) => {
            let skipped = set.skipped();
            writeln!(out, "loaded: {} rules", set.len())?;
            writeln!(out, "skipped: {} files", skipped.len())?;
            for s in skipped {
                for r in &s.reasons {
                    writeln!(out, "  {r}")?;
                }
            }
            if !skipped.is_empty() && cfg.sensor.unsupported_rules == rules::Unsupported::Error {
                writeln!(
                    out,
                    "with sensor.unsupported_rules = \"error\" (configured) the sensor would refuse \
                     these rules; set it to \"skip\" to run the {} that load",
                    set.len()
                )?;
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            writeln!(out, "loaded: 0 rules")?;
            for r in &e.errors {
                writeln!(out, "  {r}")?;
            }
            Ok(ExitCode::from(2))
        }
    }
}

fn replay(input: &Path, rules: Vec<PathBuf>, config: Option<&Path>) -> Result<ExitCode> {
    let set = load_rules_cli_or_config(rules, config)?;
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
        Ok("trace") => log::LevelFilter::Trace,
        Ok("warn") => log::LevelFilter::Warn,
        _ => log::LevelFilter::Info,
    };
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(level));
}

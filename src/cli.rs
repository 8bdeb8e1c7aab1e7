//! The command line (clap derive). Parsing only: `main` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub const DEFAULT_CONFIG: &str = "/etc/execsentry/execsentry.toml";
pub const DEFAULT_SOCKET: &str = "/run/execsentry/alerts.sock";

#[derive(Debug, Parser)]
#[command(
    name = "execsentry",
    version = env!("EXECSENTRY_VERSION"),
    about = "Detects container administration commands (MITRE ATT&CK T1609) on Linux hosts, without eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    /// JSON lines on standard output, instead of the configured outputs.
    Stdout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptureArg {
    Auto,
    Proc,
    Fanotify,
    Kprobe,
}

impl CaptureArg {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureArg::Auto => "auto",
            CaptureArg::Proc => "proc",
            CaptureArg::Fanotify => "fanotify",
            CaptureArg::Kprobe => "kprobe",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sensor (needs root: CAP_NET_ADMIN for the proc connector).
    Run {
        /// Configuration file [default: /etc/execsentry/execsentry.toml, if present].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Send everything to standard output instead of the configured outputs.
        #[arg(long, value_enum)]
        output: Option<OutputArg>,
        /// Rule file or directory (repeatable); replaces `sensor.rules`.
        #[arg(long, value_name = "PATH")]
        rules: Vec<PathBuf>,
        /// Also emit plain exec events, not only alerts.
        #[arg(long)]
        events: bool,
        /// How execs are captured; replaces `sensor.capture`.
        #[arg(long, value_enum)]
        capture: Option<CaptureArg>,
        /// The root-only control socket `execsentry status` asks.
        #[arg(long, value_name = "PATH", default_value = crate::status::DEFAULT_CONTROL_SOCKET)]
        control: PathBuf,
    },
    /// Evaluate rules over ECS events (JSON lines) and print the alerts.
    Replay {
        /// JSON-lines file, or `-` for standard input.
        input: PathBuf,
        /// Rule file or directory (repeatable) [default: the configured rules].
        #[arg(long, value_name = "PATH")]
        rules: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate or test rule files.
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// Validate a configuration file and print the effective configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Ask the running sensor for its counters, capture mode and features.
    Status {
        /// The daemon's root-only control socket.
        #[arg(long, value_name = "PATH", default_value = crate::status::DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Developer tools, not part of the interface.
    #[command(hide = true, subcommand)]
    Debug(crate::capture::kprobe::debug::DebugAction),
    /// Print alerts from a running sensor's local socket.
    Tail {
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the raw ECS JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesAction {
    /// Parse and compile rule files; report every error with file:line:col.
    Check {
        /// Rule files or directories [default: the configured rules].
        paths: Vec<PathBuf>,
    },
    /// Run every rule's `[[rule.test]]` cases and print a pass/fail table.
    Test { paths: Vec<PathBuf> },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate FILE [default: /etc/execsentry/execsentry.toml].
    Check { file: Option<PathBuf> },
}

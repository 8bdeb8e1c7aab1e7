//! The TOML configuration: parsing with `deny_unknown_fields`, defaults (the
//! values documented in `packaging/execsentry.toml`), and validation. What
//! leaves this module is trusted: sinks never re-check a mode or a queue size.
//!
//! Errors carry `file:line:col` so `execsentry config check` points at the
//! offending key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sensor: SensorConfig,
    pub output: OutputConfig,
    pub metadata: MetadataConfig,
    pub identity: crate::identity::IdentityConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorConfig {
    /// Rule files or directories of `*.toml` rules, loaded in order.
    pub rules: Vec<PathBuf>,
    /// Also send plain exec events, not only alerts.
    pub emit_events: bool,
    /// Upper bound on the bytes of argv kept per exec (the rest is cut and
    /// `execsentry.args_truncated` set).
    pub max_args_bytes: usize,
    /// Entries in the process table.
    pub table_size: usize,
    /// `auto` | `proc` | `fanotify` | `kprobe`.
    pub capture: String,
    /// Let rules with `action = "deny"` refuse execs (fanotify capture only).
    /// Off, such a rule is a configuration error rather than a silent no-op.
    pub enforce: bool,
    /// Seconds between `stats:` self-log lines, written when a loss counter
    /// moved.
    pub stats_interval: u64,
    /// A rule file that cannot be loaded (syntax, unknown field, a field of
    /// another event kind): `error` refuses to start, `skip` logs the file
    /// with its `file:line:col` reason, counts it and loads the rest.
    pub unsupported_rules: crate::rules::Unsupported,
    /// Environment variables whose `NAME=value` goes into
    /// `process.env_vars`; empty (the default) turns the field off.
    pub capture_env_vars: Vec<String>,
    /// Data pages of each CPU's perf ring in kprobe mode (a power of two;
    /// all rings together stay within 64 MiB). Smaller rings lose records
    /// under exec storms; those execs are flagged.
    pub kprobe_ring_pages: usize,
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            rules: vec![
                PathBuf::from("/usr/share/execsentry/rules"),
                PathBuf::from("/etc/execsentry/rules.d"),
            ],
            emit_events: false,
            max_args_bytes: 128 * 1024,
            table_size: 65536,
            capture: "auto".into(),
            enforce: false,
            stats_interval: 300,
            unsupported_rules: crate::rules::Unsupported::Error,
            capture_env_vars: Vec::new(),
            kprobe_ring_pages: crate::capture::kprobe::DEFAULT_RING_PAGES,
        }
    }
}

/// `[metadata]`: container and pod names from the runtimes' local state
/// files (see `crate::metadata`). Every root is optional: a missing
/// directory is simply not found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// Look metadata up at all.
    pub enabled: bool,
    /// Labels copied into `container.labels`; an entry ending in `*`
    /// matches every key with that prefix. Empty: no labels.
    pub labels: Vec<String>,
    /// `<root>/<id>/state.json` (runc, and Docker's runc).
    pub runc_roots: Vec<PathBuf>,
    /// `<root>/<namespace>/<id>/state.json` (containerd's runc shim).
    pub containerd_runc_roots: Vec<PathBuf>,
    /// `<root>/<namespace>/<id>/config.json` (containerd v2 task bundles).
    pub containerd_task_roots: Vec<PathBuf>,
    /// `<root>/<id>/status` (crun).
    pub crun_roots: Vec<PathBuf>,
    /// containers/storage roots (cri-o, podman):
    /// `overlay-containers/<id>/userdata/config.json`, `containers.json`.
    pub storage_roots: Vec<PathBuf>,
    /// `<root>/<id>/config.v2.json` and `hostconfig.json` (Docker).
    pub docker_roots: Vec<PathBuf>,
    /// A state file larger than this is refused (and counted), never read.
    pub max_file_bytes: u64,
    /// Containers whose metadata is cached.
    pub cache_size: usize,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect();
        MetadataConfig {
            enabled: true,
            labels: [
                "app",
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
                "app.kubernetes.io/part-of",
                "app.kubernetes.io/version",
                "com.docker.compose.project",
                "com.docker.compose.service",
            ]
            .map(String::from)
            .to_vec(),
            runc_roots: paths(&["/run/runc", "/run/docker/runtime-runc/moby"]),
            containerd_runc_roots: paths(&["/run/containerd/runc"]),
            containerd_task_roots: paths(&[
                "/run/containerd/io.containerd.runtime.v2.task",
                "/run/docker/containerd/daemon/io.containerd.runtime.v2.task",
            ]),
            crun_roots: paths(&["/run/crun"]),
            storage_roots: paths(&["/run/containers/storage", "/var/lib/containers/storage"]),
            docker_roots: paths(&["/var/lib/docker/containers"]),
            max_file_bytes: 1024 * 1024,
            cache_size: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub syslog: SyslogConfig,
    pub socket: SocketConfig,
    pub file: FileConfig,
    pub stdout: StdoutConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Unix,
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Rfc5424,
    Rfc3164,
    Cef,
}

/// What goes in the syslog MSG part (RFC 5424 and 3164; CEF has its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    Message,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    pub enabled: bool,
    pub transport: Transport,
    /// Socket path for `transport = "unix"`.
    pub path: PathBuf,
    /// `host:port` for udp/tcp/tls.
    pub address: String,
    pub format: Format,
    /// A syslog facility name (`authpriv`, `local0`, …).
    pub facility: String,
    pub app_name: String,
    /// Messages held while the collector is away; older ones are kept, new
    /// ones beyond this are dropped and counted.
    pub queue: usize,
    pub payload: Payload,
    /// Longer messages are cut and end with `...[truncated]`.
    pub max_message_bytes: usize,
    /// PEM CA bundle that signs the collector's certificate (tls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for collectors that ask for one (tls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name checked against the collector's certificate; default: the host
    /// part of `address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            enabled: true,
            transport: Transport::Unix,
            path: PathBuf::from("/dev/log"),
            address: "127.0.0.1:514".into(),
            format: Format::Rfc3164,
            facility: "authpriv".into(),
            app_name: "execsentry".into(),
            queue: 10000,
            payload: Payload::Message,
            max_message_bytes: 8192,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketConfig {
    pub enabled: bool,
    pub path: PathBuf,
    /// Octal permission bits as a string; world-writable is refused.
    pub mode: String,
    /// Group owning the socket; if it does not exist the socket keeps the
    /// sensor's group and a warning is logged.
    pub group: String,
    /// Bytes buffered per reader before it is disconnected as too slow.
    pub reader_buffer: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            enabled: true,
            path: PathBuf::from("/run/execsentry/alerts.sock"),
            mode: "0660".into(),
            group: "execsentry".into(),
            reader_buffer: 1024 * 1024,
        }
    }
}

impl SocketConfig {
    /// The validated permission bits.
    pub fn mode_bits(&self) -> u32 {
        parse_mode(&self.mode).unwrap_or(0o660)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub enabled: bool,
    pub path: PathBuf,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            enabled: false,
            path: PathBuf::from("/var/log/execsentry/alerts.json"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutConfig {
    pub enabled: bool,
}

/// A config that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `file:line:col: message` (line/col are 1-based; 0 when unknown).
    #[error("{}", located(.name, *.line, *.col, .message))]
    Parse {
        name: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{}", located(.name, *.line, 0, &format!("{}: {}", .key, .message)))]
    Invalid {
        name: String,
        line: usize,
        key: String,
        message: String,
    },
}

fn located(name: &str, line: usize, col: usize, msg: &str) -> String {
    match (line, col) {
        (0, _) => format!("{name}: {msg}"),
        (l, 0) => format!("{name}:{l}: {msg}"),
        (l, c) => format!("{name}:{l}:{c}: {msg}"),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_str(&path.display().to_string(), &text)
    }

    /// Parses and validates `text`; `name` is used in error messages.
    #[allow(clippy::should_implement_trait)] // needs a name for errors
    pub fn from_str(name: &str, text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Parse {
                name: name.to_string(),
                line,
                col,
                message: e.message().trim_end().to_string(),
            }
        })?;
        cfg.validate(name, text)?;
        Ok(cfg)
    }

    /// The effective configuration, as `config check` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// `run --output stdout`: only stdout, every other sink off.
    pub fn stdout_only(&mut self) {
        self.output.syslog.enabled = false;
        self.output.socket.enabled = false;
        self.output.file.enabled = false;
        self.output.stdout.enabled = true;
    }

    fn validate(&self, name: &str, text: &str) -> Result<(), ConfigError> {
        let bad = |section: &str, key: &str, message: String| ConfigError::Invalid {
            name: name.to_string(),
            line: key_line(text, section, key),
            key: format!("{section}.{key}"),
            message,
        };
        let s = &self.sensor;
        if !matches!(s.capture.as_str(), "auto" | "proc" | "fanotify" | "kprobe") {
            return Err(bad(
                "sensor",
                "capture",
                format!("`{}`: expected auto, proc, fanotify or kprobe", s.capture),
            ));
        }
        if s.enforce && s.capture == "kprobe" {
            return Err(bad(
                "sensor",
                "enforce",
                "needs capture = \"fanotify\" or \"auto\": a kprobe cannot refuse an exec".into(),
            ));
        }
        if s.table_size == 0 {
            return Err(bad("sensor", "table_size", "must be at least 1".into()));
        }
        if let Some(bad_name) = s
            .capture_env_vars
            .iter()
            .find(|n| n.is_empty() || n.contains(['=', '\0']))
        {
            return Err(bad(
                "sensor",
                "capture_env_vars",
                format!("`{bad_name}` is not an environment variable name"),
            ));
        }
        if !(16..=65536).contains(&s.kprobe_ring_pages) || !s.kprobe_ring_pages.is_power_of_two() {
            return Err(bad(
                "sensor",
                "kprobe_ring_pages",
                "must be a power of two from 16 to 65536".into(),
            ));
        }
        if s.max_args_bytes < 256 {
            return Err(bad(
                "sensor",
                "max_args_bytes",
                "must be at least 256".into(),
            ));
        }
        let sl = &self.output.syslog;
        const SL: &str = "output.syslog";
        if syslog::Facility::from_str(&sl.facility).is_err() {
            return Err(bad(
                SL,
                "facility",
                format!("unknown facility `{}`", sl.facility),
            ));
        }
        if sl.queue == 0 {
            return Err(bad(SL, "queue", "must be at least 1".into()));
        }
        if sl.max_message_bytes < 2048 {
            // RFC 5424 §6.1: receivers should accept 2048 octets; the header
            // and the structured data (each value capped) always fit in it,
            // so truncation only ever cuts the MSG part.
            return Err(bad(SL, "max_message_bytes", "must be at least 2048".into()));
        }
        if sl.app_name.is_empty()
            || sl.app_name.len() > 48
            || !sl.app_name.bytes().all(|b| (33..=126).contains(&b))
        {
            return Err(bad(
                SL,
                "app_name",
                "must be 1-48 printable ASCII characters without spaces".into(),
            ));
        }
        if sl.enabled
            && sl.transport != Transport::Unix
            && let Err(e) = crate::sink::split_host_port(&sl.address)
        {
            return Err(bad(SL, "address", e));
        }
        if sl.cert_file.is_some() != sl.key_file.is_some() {
            return Err(bad(
                SL,
                "cert_file",
                "cert_file and key_file go together".into(),
            ));
        }
        let so = &self.output.socket;
        match parse_mode(&so.mode) {
            None => {
                return Err(bad(
                    "output.socket",
                    "mode",
                    format!("`{}` is not an octal mode such as \"0660\"", so.mode),
                ));
            }
            Some(m) if m & 0o002 != 0 => {
                return Err(bad(
                    "output.socket",
                    "mode",
                    format!("`{}` is world-writable; alerts socket must not be", so.mode),
                ));
            }
            Some(_) => {}
        }
        if so.reader_buffer < 4096 {
            return Err(bad(
                "output.socket",
                "reader_buffer",
                "must be at least 4096".into(),
            ));
        }
        if so.enabled && so.path.as_os_str().is_empty() {
            return Err(bad("output.socket", "path", "must not be empty".into()));
        }
        if self.output.file.enabled && self.output.file.path.as_os_str().is_empty() {
            return Err(bad("output.file", "path", "must not be empty".into()));
        }
        if let Err((key, why)) = self.identity.validate() {
            return Err(bad("identity", key, why));
        }
        let md = &self.metadata;
        if !(4096..=64 * 1024 * 1024).contains(&md.max_file_bytes) {
            return Err(bad(
                "metadata",
                "max_file_bytes",
                "must be between 4096 and 67108864".into(),
            ));
        }
        if md.cache_size == 0 {
            return Err(bad("metadata", "cache_size", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Permission bits only (no setuid/setgid/sticky on a socket).
fn parse_mode(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Best-effort line of `key = …` under `[section]`, for validation errors
/// about values (0 when the key was defaulted or written inline).
fn key_line(text: &str, section: &str, key: &str) -> usize {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            current = h.split(']').next().unwrap_or("").trim().to_string();
            continue;
        }
        if current == section
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == key
        {
            return i + 1;
        }
    }
    0
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Unix => "unix",
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_str("t.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn shipped_default_config_parses_to_default() {
        let text = include_str!("../packaging/execsentry.toml");
        let cfg = Config::from_str("execsentry.toml", text).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn to_toml_round_trips() {
        let cfg = Config::default();
        assert_eq!(Config::from_str("x", &cfg.to_toml()).unwrap(), cfg);
    }

    #[test]
    fn unsupported_rules_and_env_vars_keys() {
        let c = Config::from_str(
            "x",
            "[sensor]\nunsupported_rules = \"skip\"\ncapture_env_vars = [\"HTTP_PROXY\"]\n",
        )
        .unwrap();
        assert_eq!(c.sensor.unsupported_rules, crate::rules::Unsupported::Skip);
        assert_eq!(c.sensor.capture_env_vars, vec!["HTTP_PROXY".to_string()]);
        assert_eq!(
            Config::default().sensor.unsupported_rules,
            crate::rules::Unsupported::Error
        );
        let e = err("[sensor]\nunsupported_rules = \"ignore\"\n");
        assert!(e.starts_with("t.toml:2:"), "{e}");
        let e = err("[sensor]\ncapture_env_vars = [\"A=B\"]\n");
        assert!(e.contains("capture_env_vars"), "{e}");
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let e = err("[sensor]\nemit_events = true\n\n[output.syslog]\ntransprot = \"tcp\"\n");
        assert!(
            e.starts_with("t.toml:5:1: unknown field `transprot`, expected one of"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_rejected_with_line() {
        let e = err("[output.syslog]\ntransport = \"carrier-pigeon\"\n");
        assert!(e.starts_with("t.toml:2:"), "{e}");
        let e = err("[output.socket]\nmode = \"0666\"\n");
        assert_eq!(
            e,
            "t.toml:2: output.socket.mode: `0666` is world-writable; alerts socket must not be"
        );
        let e = err("[output.syslog]\nqueue = 0\n");
        assert_eq!(e, "t.toml:2: output.syslog.queue: must be at least 1");
        let e = err("[output.syslog]\nfacility = \"nope\"\n");
        assert!(e.contains("unknown facility"), "{e}");
        let e = err("[output.syslog]\ntransport = \"tcp\"\naddress = \"nocolon\"\n");
        assert!(e.starts_with("t.toml:3: output.syslog.address"), "{e}");
        let e = err("[output.socket]\nmode = \"rw\"\n");
        assert!(e.contains("not an octal mode"), "{e}");
    }

    #[test]
    fn metadata_section_is_checked() {
        let e = err("[metadata]\nmax_file_bytes = 10\n");
        assert_eq!(
            e,
            "t.toml:2: metadata.max_file_bytes: must be between 4096 and 67108864"
        );
        let e = err("[metadata]\nroots = []\n");
        assert!(e.contains("unknown field `roots`"), "{e}");
        let cfg = Config::from_str("t", "[metadata]\nlabels = [\"team\"]\n").unwrap();
        assert_eq!(cfg.metadata.labels, ["team"]);
        assert!(cfg.metadata.enabled);
    }

    #[test]
    fn stdout_only_disables_the_rest() {
        let mut cfg = Config::default();
        cfg.stdout_only();
        assert!(cfg.output.stdout.enabled);
        assert!(!cfg.output.syslog.enabled && !cfg.output.socket.enabled);
    }
}

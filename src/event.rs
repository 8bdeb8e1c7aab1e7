//! The one event model: what the sensor emits, what rules read and what
//! `replay` reads back. Field names follow the Elastic Common Schema so alerts
//! drop into existing pipelines; sensor-specific facts live under `execsentry`.
//!
//! Reading is lenient, so `replay` takes ECS from any producer: every field
//! is optional and unknown fields are ignored here (rule test events check
//! for unknown fields themselves).
//!
//! Everything here is plain data (no I/O). An alert is an [`Event`] whose
//! `event.kind` is `"alert"` and whose `rule`/`threat`/`message` are filled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn is_false(b: &bool) -> bool {
    !*b
}

/// ECS lets a keyword field hold one value or an array of them; exporters
/// write either. Null reads as empty.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
        Null(()),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
        OneOrMany::Null(()) => Vec::new(),
    })
}

/// ECS ids are keywords, but some exporters write uids as numbers.
fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(u64),
        I(i64),
        Null(()),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
        Id::I(n) => n.to_string(),
        Id::Null(()) => String::new(),
    })
}

/// One exec (or, later, another process event) as emitted on every output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "@timestamp", default)]
    pub timestamp: String,
    #[serde(default)]
    pub event: EventMeta,
    #[serde(default)]
    pub host: Host,
    #[serde(default)]
    pub process: Process,
    /// ECS top-level `user`: the effective user of the process, with
    /// Elastic Defend's `user.Ext.real` for the real one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<EcsUser>,
    /// ECS top-level `group`, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<EcsGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<Orchestrator>,
    #[serde(default)]
    pub execsentry: SensorFacts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat: Option<Threat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventMeta {
    /// `"event"` for plain exec events, `"alert"` for rule matches.
    #[serde(default)]
    pub kind: String,
    #[serde(default, deserialize_with = "one_or_many")]
    pub category: Vec<String>,
    #[serde(rename = "type", default, deserialize_with = "one_or_many")]
    pub kind_type: Vec<String>,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub sequence: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub os: HostOs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostOs {
    #[serde(rename = "type", default)]
    pub os_type: String,
}

/// ECS `process.*`. Arguments are kept as the kernel gave them; an argument
/// that is not valid UTF-8 is rendered with `\xNN` for each invalid byte and
/// `\\` for each backslash, and its index is listed in
/// `execsentry.args_escaped`, so the original bytes can always be recovered
/// (see [`crate::bytes`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Process {
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub entity_id: String,
    #[serde(default)]
    pub executable: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "one_or_many")]
    pub args: Vec<String>,
    #[serde(default)]
    pub args_count: u32,
    #[serde(default)]
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default)]
    pub interactive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<Tty>,
    #[serde(default)]
    pub user: User,
    #[serde(default)]
    pub group: Group,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_user: Option<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_group: Option<Group>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<Thread>,
    #[serde(default)]
    pub parent: Parent,
    /// The session's entry process: what brought the user or workload onto
    /// the host (an sshd child, a container's init, a terminal's shell,
    /// a service started by init).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_leader: Option<EntryLeader>,
    /// The process whose pid is this process's session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_leader: Option<Leader>,
    /// The process whose pid is this process's process group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_leader: Option<Leader>,
    /// `NAME=value` for the variables named by `sensor.capture_env_vars`
    /// only (see `execsentry.env_vars_source`).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env_vars: Vec<String>,
    /// ECS `process.hash.*` of the executable file (`identity.hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<Hash>,
}

/// ECS `process.hash`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hash {
    /// Lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parent {
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub entity_id: String,
    #[serde(default)]
    pub executable: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "one_or_many")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_count: Option<u32>,
    #[serde(default)]
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
}

/// ECS `process.session_leader` / `process.group_leader`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Leader {
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub entity_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub executable: String,
}

/// ECS top-level `user`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EcsUser {
    #[serde(default, deserialize_with = "id_string")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "Ext", default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<IdExt>,
}

/// ECS top-level `group`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EcsGroup {
    #[serde(default, deserialize_with = "id_string")]
    pub id: String,
    #[serde(rename = "Ext", default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<IdExt>,
}

/// Elastic Defend's `user.Ext` / `group.Ext`: `real.id` is the real id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdExt {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real: Option<Group>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tty {
    #[serde(default)]
    pub char_device: CharDevice,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CharDevice {
    #[serde(default)]
    pub major: u32,
    #[serde(default)]
    pub minor: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    #[serde(default, deserialize_with = "id_string")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    #[serde(default, deserialize_with = "id_string")]
    pub id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    #[serde(default)]
    pub capabilities: Capabilities,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Names such as `CAP_SYS_ADMIN`, as ECS asks.
    #[serde(default, deserialize_with = "one_or_many")]
    pub effective: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryLeader {
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub entity_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub executable: String,
    #[serde(default, deserialize_with = "one_or_many")]
    pub args: Vec<String>,
    /// True on the entry leader's own events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as_process: Option<bool>,
    #[serde(default)]
    pub entry_meta: EntryMeta,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// `"container"` for every process inside a container: the Elastic seed
    /// rules key on exactly this.
    #[serde(rename = "type", default)]
    pub meta_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub id: String,
    /// docker | containerd | cri-o | podman | lxc | systemd-nspawn | ecs | unknown
    #[serde(default)]
    pub runtime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// From the runtime's local state (see [`crate::metadata`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ContainerImage>,
    /// Only the labels on the configured allow-list.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// ECS `container.image.*`: `nginx:1.25` is name `nginx`, tag `1.25`; a
/// registry stays in the name, a digest goes to `hash.all`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<ImageHash>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHash {
    /// `algorithm:value` digests, e.g. `sha256:…`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub all: Vec<String>,
}

/// ECS `container.security_context.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityContext {
    #[serde(default)]
    pub privileged: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orchestrator {
    #[serde(rename = "type", default)]
    pub orchestrator_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub resource: OrchestratorResource,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrchestratorResource {
    /// The pod uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The workload that owns the pod (deployment, statefulset, …), when
    /// the pod's labels tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ResourceParent>,
}

/// ECS `orchestrator.resource.parent.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceParent {
    #[serde(rename = "type", default)]
    pub parent_type: String,
    #[serde(default)]
    pub name: String,
}

/// Facts about how the sensor saw the event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SensorFacts {
    /// False when argv could not be read in full (process gone, empty cmdline).
    #[serde(default)]
    pub args_complete: bool,
    /// `"proc"` (/proc/<pid>/cmdline), `"comm"` (fallback), `"fanotify"`.
    #[serde(default)]
    pub args_source: String,
    /// Indexes of `process.args` rendered with `\xNN`/`\\` escapes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args_escaped: Vec<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub args_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loginuid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessionid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<Namespaces>,
    /// Start time of the process in clock ticks since boot (field 22 of
    /// `/proc/<pid>/stat`); with the pid it is the process identity.
    #[serde(default)]
    pub start_ticks: u64,
    /// A script's `#!` interpreter, when fanotify saw the exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// Where `process.env_vars` came from: `"capture"` (the exec's envp)
    /// or `"proc"` (`/proc/<pid>/environ` read after the exec, which a
    /// short-lived process can leave before it is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars_source: Option<String>,
    /// A listed variable was left out: it did not fit in `max_args_bytes`
    /// with the arguments.
    #[serde(default, skip_serializing_if = "is_false")]
    pub env_vars_truncated: bool,
    /// What the executable file's content says it is (see `identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<ExeIdentity>,
    /// Facts left out because reading them would have waited on a slow
    /// (FUSE, network) filesystem past its bound: `"identity"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stalled: Vec<String>,
}

/// `execsentry.exe.*`: facts read from the executable file itself, so a
/// renamed copy of a tool is still recognised. Only adds facts:
/// `process.name` stays what the process was called.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExeIdentity {
    /// Canonical tool name from the tool table (`docker`, `kubectl`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<GoFacts>,
    /// The process exec'd its parent's own program again (`/proc/self/exe`
    /// or a memfd copy of it), as container runtimes do to start helpers
    /// (`runc init`, dockerd's `docker-untar`, the containerd shim), or a
    /// runtime ran another runtime's installed program through
    /// `/proc/<pid>/exe` (a hook): the name it then carries (`exe`,
    /// `runc:[2:INIT]`) is no rename.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reexec: bool,
}

/// `execsentry.exe.go.*`, from the binary's `.go.buildinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoFacts {
    /// Main package path, e.g. `github.com/docker/cli/cmd/docker`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub main: String,
    /// Toolchain version, e.g. `go1.22.1`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// Namespace inode numbers from `/proc/<pid>/ns/*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    #[serde(default)]
    pub pid: u64,
    #[serde(default)]
    pub mnt: u64,
    #[serde(default)]
    pub net: u64,
    #[serde(default)]
    pub uts: u64,
    #[serde(default)]
    pub ipc: u64,
    #[serde(default)]
    pub user: u64,
    #[serde(default)]
    pub cgroup: u64,
}

/// ECS `rule.*` on alerts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleRef {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub ruleset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// ECS `threat.*`. ECS makes technique and tactic ids arrays, so a rule
/// with several `[[rule.threat]]` entries (T1609 and T1611, say) lists all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Threat {
    #[serde(default)]
    pub framework: String,
    #[serde(default)]
    pub technique: ThreatRefs,
    #[serde(default)]
    pub tactic: ThreatRefs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreatRefs {
    #[serde(default, deserialize_with = "one_or_many")]
    pub id: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub name: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference: Vec<String>,
}

impl Event {
    pub fn is_alert(&self) -> bool {
        self.event.kind == "alert"
    }

    pub fn in_container(&self) -> bool {
        self.container.is_some()
    }
}

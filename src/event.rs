//! The one event model: what the sensor emits, what rules read and what
//! `replay` reads back. Field names follow the Elastic Common Schema so alerts
//! drop into existing pipelines; sensor-specific facts live under `execsentry`.
//!
//! Everything here is plain data (no I/O). An alert is an [`Event`] whose
//! `event.kind` is `"alert"` and whose `rule`/`threat`/`message` are filled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn is_false(b: &bool) -> bool {
    !*b
}

/// One exec (or, later, another process event) as emitted on every output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventMeta,
    pub host: Host,
    pub process: Process,
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
#[serde(deny_unknown_fields)]
pub struct EventMeta {
    /// `"event"` for plain exec events, `"alert"` for rule matches.
    pub kind: String,
    pub category: Vec<String>,
    #[serde(rename = "type")]
    pub kind_type: Vec<String>,
    pub action: String,
    pub id: String,
    pub sequence: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub hostname: String,
    pub os: HostOs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostOs {
    #[serde(rename = "type")]
    pub os_type: String,
}

/// ECS `process.*`. Arguments are kept as the kernel gave them; an argument
/// that is not valid UTF-8 is rendered with `\xNN` for each invalid byte and
/// `\\` for each backslash, and its index is listed in
/// `execsentry.args_escaped`, so the original bytes can always be recovered
/// (see [`crate::bytes`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub pid: u32,
    pub entity_id: String,
    #[serde(default)]
    pub executable: String,
    pub name: String,
    #[serde(default)]
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
    pub thread: Option<Thread>,
    #[serde(default)]
    pub parent: Parent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_leader: Option<EntryLeader>,
    /// ECS `process.hash.*` of the executable file (`identity.hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<Hash>,
}

/// ECS `process.hash`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hash {
    /// Lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parent {
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub entity_id: String,
    #[serde(default)]
    pub executable: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tty {
    pub char_device: CharDevice,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharDevice {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    #[serde(default)]
    pub id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thread {
    pub capabilities: Capabilities,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Names such as `CAP_SYS_ADMIN`, as ECS asks.
    pub effective: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryLeader {
    pub entry_meta: EntryMeta,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryMeta {
    /// `"container"` for every process inside a container: the Elastic seed
    /// rules key on exactly this.
    #[serde(rename = "type")]
    pub meta_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub id: String,
    /// docker | containerd | cri-o | podman | lxc | systemd-nspawn | ecs | unknown
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
#[serde(deny_unknown_fields)]
pub struct ContainerImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<ImageHash>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageHash {
    /// `algorithm:value` digests, e.g. `sha256:…`.
    pub all: Vec<String>,
}

/// ECS `container.security_context.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityContext {
    pub privileged: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Orchestrator {
    #[serde(rename = "type")]
    pub orchestrator_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub resource: OrchestratorResource,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct ResourceParent {
    #[serde(rename = "type")]
    pub parent_type: String,
    pub name: String,
}

/// Facts about how the sensor saw the event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// What the executable file's content says it is (see `identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<ExeIdentity>,
}

/// `execsentry.exe.*`: facts read from the executable file itself, so a
/// renamed copy of a tool is still recognised. Only adds facts:
/// `process.name` stays what the process was called.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExeIdentity {
    /// Canonical tool name from the tool table (`docker`, `kubectl`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<GoFacts>,
}

/// `execsentry.exe.go.*`, from the binary's `.go.buildinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct RuleRef {
    pub id: String,
    pub uuid: String,
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
#[serde(deny_unknown_fields)]
pub struct Threat {
    pub framework: String,
    pub technique: ThreatRefs,
    pub tactic: ThreatRefs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatRefs {
    pub id: Vec<String>,
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

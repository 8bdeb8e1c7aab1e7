//! The field registry: every ECS field a rule may name, its type and how to
//! read it from an [`Event`] without allocating. A name not listed here is a
//! compile error, never a silent `false`.
//!
//! Empty strings and empty lists read as missing: the event model uses them
//! where the sensor could not learn a value (a parent that already exited),
//! and EQL makes comparisons on a missing field false.

use crate::event::{ContainerImage, EntryLeader, Event, Group, Leader, ResourceParent, User};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FType {
    Str,
    List,
    Num,
    Bool,
}

/// A field's value in one event.
#[derive(Debug, Clone, Copy)]
pub enum Val<'a> {
    Missing,
    Str(&'a str),
    List(&'a [String]),
    Num(f64),
    Bool(bool),
}

pub type Getter = for<'a> fn(&'a Event) -> Val<'a>;

pub struct FieldDef {
    pub name: &'static str,
    pub ty: FType,
    pub get: Getter,
}

fn s(v: &str) -> Val<'_> {
    if v.is_empty() {
        Val::Missing
    } else {
        Val::Str(v)
    }
}

fn os(v: &Option<String>) -> Val<'_> {
    v.as_deref().map_or(Val::Missing, s)
}

fn l(v: &[String]) -> Val<'_> {
    if v.is_empty() {
        Val::Missing
    } else {
        Val::List(v)
    }
}

fn pid(v: u32) -> Val<'static> {
    // pid 0 is what the model holds when the pid is unknown.
    if v == 0 {
        Val::Missing
    } else {
        Val::Num(f64::from(v))
    }
}

fn ob(v: Option<bool>) -> Val<'static> {
    v.map_or(Val::Missing, Val::Bool)
}

fn on(v: Option<u32>) -> Val<'static> {
    v.map_or(Val::Missing, |n| Val::Num(f64::from(n)))
}

fn uid(u: Option<&User>) -> Val<'_> {
    u.map_or(Val::Missing, |u| s(&u.id))
}

fn gid(g: Option<&Group>) -> Val<'_> {
    g.map_or(Val::Missing, |g| s(&g.id))
}

fn entry(e: &Event) -> Option<&EntryLeader> {
    e.process.entry_leader.as_ref()
}

fn leader(l: &Option<Leader>) -> Option<&Leader> {
    l.as_ref()
}

fn image(e: &Event) -> Option<&ContainerImage> {
    e.container.as_ref()?.image.as_ref()
}

fn parent(e: &Event) -> Option<&ResourceParent> {
    e.orchestrator.as_ref()?.resource.parent.as_ref()
}

macro_rules! fields {
    ($( $name:literal : $ty:ident => |$e:ident| $body:expr ;)*) => {
        pub static FIELDS: &[FieldDef] = &[
            $( FieldDef { name: $name, ty: FType::$ty, get: { fn g($e: &Event) -> Val<'_> { $body } g } }, )*
        ];
    };
}

fields! {
    "process.name": Str => |e| s(&e.process.name);
    "process.executable": Str => |e| s(&e.process.executable);
    "process.args": List => |e| l(&e.process.args);
    "process.args_count": Num => |e| Val::Num(f64::from(e.process.args_count));
    "process.command_line": Str => |e| s(&e.process.command_line);
    "process.working_directory": Str => |e| os(&e.process.working_directory);
    "process.pid": Num => |e| pid(e.process.pid);
    "process.entity_id": Str => |e| s(&e.process.entity_id);
    "process.interactive": Bool => |e| Val::Bool(e.process.interactive);
    "process.user.id": Str => |e| s(&e.process.user.id);
    "process.user.name": Str => |e| os(&e.process.user.name);
    "process.real_user.id": Str => |e| e.process.real_user.as_ref().map_or(Val::Missing, |u| s(&u.id));
    "process.real_user.name": Str => |e| e.process.real_user.as_ref().map_or(Val::Missing, |u| os(&u.name));
    "process.group.id": Str => |e| s(&e.process.group.id);
    "process.parent.pid": Num => |e| pid(e.process.parent.pid);
    "process.parent.name": Str => |e| s(&e.process.parent.name);
    "process.parent.executable": Str => |e| s(&e.process.parent.executable);
    "process.parent.args": List => |e| l(&e.process.parent.args);
    "process.parent.command_line": Str => |e| s(&e.process.parent.command_line);
    "process.real_group.id": Str => |e| gid(e.process.real_group.as_ref());
    "process.parent.args_count": Num => |e| on(e.process.parent.args_count);
    "process.parent.working_directory": Str => |e| os(&e.process.parent.working_directory);
    "process.parent.interactive": Bool => |e| ob(e.process.parent.interactive);
    "process.parent.user.id": Str => |e| uid(e.process.parent.user.as_ref());
    "process.parent.user.name": Str => |e| e.process.parent.user.as_ref().map_or(Val::Missing, |u| os(&u.name));
    "process.parent.group.id": Str => |e| gid(e.process.parent.group.as_ref());
    "process.parent.entity_id": Str => |e| s(&e.process.parent.entity_id);
    "process.entry_leader.entry_meta.type": Str => |e| entry(e).map_or(Val::Missing, |x| s(&x.entry_meta.meta_type));
    "process.entry_leader.executable": Str => |e| entry(e).map_or(Val::Missing, |x| s(&x.executable));
    "process.entry_leader.name": Str => |e| entry(e).map_or(Val::Missing, |x| s(&x.name));
    "process.entry_leader.args": List => |e| entry(e).map_or(Val::Missing, |x| l(&x.args));
    "process.entry_leader.pid": Num => |e| entry(e).map_or(Val::Missing, |x| pid(x.pid));
    "process.entry_leader.entity_id": Str => |e| entry(e).map_or(Val::Missing, |x| s(&x.entity_id));
    "process.entry_leader.same_as_process": Bool => |e| entry(e).map_or(Val::Missing, |x| ob(x.same_as_process));
    "process.session_leader.name": Str => |e| leader(&e.process.session_leader).map_or(Val::Missing, |x| s(&x.name));
    "process.session_leader.executable": Str => |e| leader(&e.process.session_leader).map_or(Val::Missing, |x| s(&x.executable));
    "process.session_leader.pid": Num => |e| leader(&e.process.session_leader).map_or(Val::Missing, |x| pid(x.pid));
    "process.group_leader.name": Str => |e| leader(&e.process.group_leader).map_or(Val::Missing, |x| s(&x.name));
    "process.group_leader.executable": Str => |e| leader(&e.process.group_leader).map_or(Val::Missing, |x| s(&x.executable));
    "process.group_leader.pid": Num => |e| leader(&e.process.group_leader).map_or(Val::Missing, |x| pid(x.pid));
    "process.env_vars": List => |e| l(&e.process.env_vars);
    "user.id": Str => |e| e.user.as_ref().map_or(Val::Missing, |u| s(&u.id));
    "user.name": Str => |e| e.user.as_ref().map_or(Val::Missing, |u| os(&u.name));
    "user.Ext.real.id": Str => |e| gid(e.user.as_ref().and_then(|u| u.ext.as_ref()).and_then(|x| x.real.as_ref()));
    "group.id": Str => |e| e.group.as_ref().map_or(Val::Missing, |g| s(&g.id));
    "group.Ext.real.id": Str => |e| gid(e.group.as_ref().and_then(|g| g.ext.as_ref()).and_then(|x| x.real.as_ref()));
    "process.thread.capabilities.effective": List => |e| e.process.thread.as_ref().map_or(Val::Missing, |t| l(&t.capabilities.effective));
    "container.id": Str => |e| e.container.as_ref().map_or(Val::Missing, |c| s(&c.id));
    "container.runtime": Str => |e| e.container.as_ref().map_or(Val::Missing, |c| s(&c.runtime));
    "container.name": Str => |e| e.container.as_ref().map_or(Val::Missing, |c| os(&c.name));
    "container.image.name": Str => |e| image(e).map_or(Val::Missing, |i| os(&i.name));
    "container.image.tag": Str => |e| image(e).map_or(Val::Missing, |i| os(&i.tag));
    "container.image.hash.all": List => |e| image(e).and_then(|i| i.hash.as_ref()).map_or(Val::Missing, |h| l(&h.all));
    "container.security_context.privileged": Bool => |e| e.container.as_ref().and_then(|c| c.security_context.as_ref()).map_or(Val::Missing, |s| Val::Bool(s.privileged));
    "orchestrator.type": Str => |e| e.orchestrator.as_ref().map_or(Val::Missing, |o| s(&o.orchestrator_type));
    "orchestrator.namespace": Str => |e| e.orchestrator.as_ref().map_or(Val::Missing, |o| os(&o.namespace));
    "orchestrator.resource.id": Str => |e| e.orchestrator.as_ref().map_or(Val::Missing, |o| os(&o.resource.id));
    "orchestrator.resource.name": Str => |e| e.orchestrator.as_ref().map_or(Val::Missing, |o| os(&o.resource.name));
    "orchestrator.resource.type": Str => |e| e.orchestrator.as_ref().map_or(Val::Missing, |o| os(&o.resource.resource_type));
    "orchestrator.resource.parent.type": Str => |e| parent(e).map_or(Val::Missing, |p| s(&p.parent_type));
    "orchestrator.resource.parent.name": Str => |e| parent(e).map_or(Val::Missing, |p| s(&p.name));
    "host.os.type": Str => |e| s(&e.host.os.os_type);
    "host.hostname": Str => |e| s(&e.host.hostname);
    "event.type": List => |e| l(&e.event.kind_type);
    "event.category": List => |e| l(&e.event.category);
    "event.action": Str => |e| s(&e.event.action);
    "event.kind": Str => |e| s(&e.event.kind);
    "event.outcome": Str => |e| os(&e.event.outcome);
    "execsentry.args_complete": Bool => |e| Val::Bool(e.execsentry.args_complete);
    "execsentry.args_truncated": Bool => |e| Val::Bool(e.execsentry.args_truncated);
    "execsentry.args_source": Str => |e| s(&e.execsentry.args_source);
    "execsentry.exe.tool": Str => |e| e.execsentry.exe.as_ref().map_or(Val::Missing, |x| os(&x.tool));
    "execsentry.exe.reexec": Bool => |e| e.execsentry.exe.as_ref().map_or(Val::Missing, |x| Val::Bool(x.reexec));
    "execsentry.exe.go.main": Str => |e| e.execsentry.exe.as_ref().and_then(|x| x.go.as_ref()).map_or(Val::Missing, |g| s(&g.main));
    "execsentry.exe.go.version": Str => |e| e.execsentry.exe.as_ref().and_then(|x| x.go.as_ref()).map_or(Val::Missing, |g| s(&g.version));
    "process.hash.sha256": Str => |e| e.process.hash.as_ref().map_or(Val::Missing, |h| os(&h.sha256));
}

/// Index of `name` in [`FIELDS`].
pub fn lookup(name: &str) -> Option<usize> {
    FIELDS.iter().position(|f| f.name == name)
}

/// ECS field sets of event kinds other than process events: a `process
/// where` rule that reads one can never match, so it is refused saying so.
const OTHER_KINDS: &[(&str, &str)] = &[
    ("auditd.", "Auditbeat's auditd"),
    ("file.", "file"),
    ("network.", "network"),
    ("destination.", "network"),
    ("source.", "network"),
    ("dns.", "DNS"),
    ("url.", "network"),
    ("http.", "network"),
    ("tls.", "network"),
    ("registry.", "registry"),
    ("dll.", "library load"),
];

/// The registry index for a field a rule names. An optional field (`?x`)
/// that no event has is `Ok(None)`: null, as EQL defines. Anything else
/// unknown is an error saying why.
pub fn resolve(name: &str, optional: bool) -> Result<Option<usize>, String> {
    if let Some(i) = lookup(name) {
        return Ok(Some(i));
    }
    if optional {
        return Ok(None);
    }
    if let Some((_, kind)) = OTHER_KINDS.iter().find(|(p, _)| name.starts_with(p)) {
        return Err(format!(
            "{name} is a field of {kind} events: a process event never has it, so this \
             rule cannot match process events (execsentry sees only process events)"
        ));
    }
    let hint = suggest(name)
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default();
    Err(format!("unknown field {name}{hint}"))
}

/// The known field closest to a misspelt one, for the error message.
pub fn suggest(name: &str) -> Option<&'static str> {
    FIELDS
        .iter()
        .map(|f| (super::spans::edit_distance(name, f.name), f.name))
        .filter(|&(d, _)| d <= 3)
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_reads_events() {
        let mut e = Event::default();
        e.process.name = "kubectl".into();
        e.process.args = vec!["kubectl".into(), "get".into()];
        let get = |n: &str| (FIELDS[lookup(n).unwrap()].get)(&e);
        assert!(matches!(get("process.name"), Val::Str("kubectl")));
        assert!(matches!(get("process.args"), Val::List(a) if a.len() == 2));
        assert!(matches!(get("container.id"), Val::Missing));
        assert!(matches!(get("process.parent.name"), Val::Missing));
        assert!(matches!(get("execsentry.exe.tool"), Val::Missing));
        e.execsentry.exe = Some(crate::event::ExeIdentity {
            tool: Some("docker".into()),
            go: Some(crate::event::GoFacts {
                main: "github.com/docker/cli/cmd/docker".into(),
                version: "go1.22.1".into(),
            }),
            ..Default::default()
        });
        let get = |n: &str| (FIELDS[lookup(n).unwrap()].get)(&e);
        assert!(matches!(get("execsentry.exe.tool"), Val::Str("docker")));
        assert!(matches!(
            get("execsentry.exe.go.version"),
            Val::Str("go1.22.1")
        ));
        assert!(matches!(get("process.hash.sha256"), Val::Missing));
        assert!(lookup("process.nmae").is_none());
        assert_eq!(suggest("process.nmae"), Some("process.name"));
        // Metadata fields: missing until the runtime state says otherwise.
        assert!(matches!(get("container.image.name"), Val::Missing));
        assert!(matches!(
            get("container.security_context.privileged"),
            Val::Missing
        ));
        let mut names: Vec<_> = FIELDS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FIELDS.len());
    }

    #[test]
    fn metadata_fields_read_events() {
        use crate::event::{Container, ImageHash, Orchestrator, SecurityContext};
        let mut o = Orchestrator {
            orchestrator_type: "kubernetes".into(),
            namespace: Some("kube-system".into()),
            ..Default::default()
        };
        o.resource.parent = Some(ResourceParent {
            parent_type: "daemonset".into(),
            name: "kube-proxy".into(),
        });
        let e = Event {
            container: Some(Container {
                id: "c".into(),
                runtime: "containerd".into(),
                image: Some(ContainerImage {
                    name: Some("nginx".into()),
                    tag: Some("1.25".into()),
                    hash: Some(ImageHash {
                        all: vec!["sha256:ab".into()],
                    }),
                }),
                security_context: Some(SecurityContext { privileged: true }),
                ..Default::default()
            }),
            orchestrator: Some(o),
            ..Default::default()
        };
        let get = |n: &str| (FIELDS[lookup(n).unwrap()].get)(&e);
        assert!(matches!(get("container.image.name"), Val::Str("nginx")));
        assert!(matches!(get("container.image.tag"), Val::Str("1.25")));
        assert!(matches!(get("container.image.hash.all"), Val::List(h) if h.len() == 1));
        assert!(matches!(
            get("container.security_context.privileged"),
            Val::Bool(true)
        ));
        assert!(matches!(
            get("orchestrator.namespace"),
            Val::Str("kube-system")
        ));
        assert!(matches!(
            get("orchestrator.resource.parent.type"),
            Val::Str("daemonset")
        ));
        assert!(matches!(
            get("orchestrator.resource.parent.name"),
            Val::Str("kube-proxy")
        ));
    }
}

//! The field registry: every ECS field a rule may name, its type and how to
//! read it from an [`Event`] without allocating. A name not listed here is a
//! compile error, never a silent `false`.
//!
//! Empty strings and empty lists read as missing: the event model uses them
//! where the sensor could not learn a value (a parent that already exited),
//! and EQL makes comparisons on a missing field false.

use crate::event::Event;

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
    "process.entry_leader.entry_meta.type": Str => |e| e.process.entry_leader.as_ref().map_or(Val::Missing, |x| s(&x.entry_meta.meta_type));
    "process.thread.capabilities.effective": List => |e| e.process.thread.as_ref().map_or(Val::Missing, |t| l(&t.capabilities.effective));
    "container.id": Str => |e| e.container.as_ref().map_or(Val::Missing, |c| s(&c.id));
    "container.runtime": Str => |e| e.container.as_ref().map_or(Val::Missing, |c| s(&c.runtime));
    "container.name": Str => |e| e.container.as_ref().map_or(Val::Missing, |c| os(&c.name));
    "orchestrator.type": Str => |e| e.orchestrator.as_ref().map_or(Val::Missing, |o| s(&o.orchestrator_type));
    "orchestrator.namespace": Str => |e| e.orchestrator.as_ref().map_or(Val::Missing, |o| os(&o.namespace));
    "orchestrator.resource.id": Str => |e| e.orchestrator.as_ref().map_or(Val::Missing, |o| os(&o.resource.id));
    "orchestrator.resource.name": Str => |e| e.orchestrator.as_ref().map_or(Val::Missing, |o| os(&o.resource.name));
    "orchestrator.resource.type": Str => |e| e.orchestrator.as_ref().map_or(Val::Missing, |o| os(&o.resource.resource_type));
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
}

/// Index of `name` in [`FIELDS`].
pub fn lookup(name: &str) -> Option<usize> {
    FIELDS.iter().position(|f| f.name == name)
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
        assert!(lookup("process.nmae").is_none());
        assert_eq!(suggest("process.nmae"), Some("process.name"));
        let mut names: Vec<_> = FIELDS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FIELDS.len());
    }
}

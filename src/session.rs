//! ECS session fields of a process: its entry leader, session leader and
//! process-group leader, in the meanings Elastic documents for them. PURE:
//! decided from the process's own facts and what the process table knows.
//!
//! - The **entry leader** is the process through which the session entered
//!   the host: the first process of a container (its init, or the process
//!   a `docker exec` / `runc exec` started), the program an sshd child runs
//!   for the user, a terminal's session-leading shell, or a service that
//!   init started. Every other process inherits its parent's entry leader.
//! - The **session leader** is the process whose pid is the session id, the
//!   **group leader** the one whose pid is the process group id.

use std::sync::Arc;

use crate::container::ContainerInfo;
use crate::event::{EntryLeader, EntryMeta, Leader};
use crate::process_table::{Entry, Image, MAX_IMAGE_ARGS_BYTES, ProcKey, ProcessTable};

/// Programs that accept remote logins and hand each session to a child.
const SSHD: &[&str] = &["sshd", "sshd-session"];
/// Programs that start a terminal login session.
const LOGIN: &[&str] = &["login", "agetty", "getty", "mingetty", "sulogin"];

/// `entry_meta.type` values, as Elastic Defend writes them.
pub const CONTAINER: &str = "container";
pub const SSHD_TYPE: &str = "sshd";
pub const TERMINAL: &str = "terminal";
pub const INIT: &str = "init";

/// What the exec'ing process is, for the decisions here.
pub struct SelfFacts<'a> {
    pub key: ProcKey,
    pub entity_id: &'a str,
    pub name: &'a str,
    pub executable: &'a str,
    pub args: &'a [String],
    pub session: u32,
    pub pgrp: u32,
    pub tty_nr: u32,
    pub container: Option<&'a ContainerInfo>,
}

/// How the process itself entered the host, if it did.
fn entry_kind(me: &SelfFacts<'_>, parent: Option<&Entry>) -> Option<&'static str> {
    let pimg = parent.map(|p| &*p.image);
    if let Some(c) = me.container {
        // The first process in this container: its parent is outside it.
        let same = pimg
            .and_then(|i| i.container.as_ref())
            .is_some_and(|pc| pc.id == c.id);
        return (!same).then_some(CONTAINER);
    }
    let pname = pimg.map_or("", |i| i.name.as_str());
    if SSHD.contains(&pname) && !SSHD.contains(&me.name) {
        return Some(SSHD_TYPE);
    }
    let leads_tty_session = me.session == me.key.pid && me.tty_nr != 0;
    let parent_has_leader = pimg.is_some_and(|i| i.entry_leader.is_some());
    if leads_tty_session && (!parent_has_leader || LOGIN.contains(&pname)) {
        return Some(TERMINAL);
    }
    if parent.is_some_and(|p| p.key.pid == 1) && me.key.pid != 1 {
        return Some(INIT);
    }
    None
}

/// The leader's argv as every descendant carries it (and the table keeps
/// it for each): cut to the table's per-entry argv budget, whole arguments.
fn capped_args(args: &[String]) -> Vec<String> {
    let mut budget = MAX_IMAGE_ARGS_BYTES;
    args.iter()
        .take_while(|a| {
            let fits = a.len() <= budget;
            budget = budget.saturating_sub(a.len());
            fits
        })
        .cloned()
        .collect()
}

/// The entry leader of the exec'ing process. A process in a container
/// always has one of type `container` (the seed rules key on it), even when
/// the container's first process was not seen.
pub fn entry_leader(me: &SelfFacts<'_>, parent: Option<&Entry>) -> Option<EntryLeader> {
    let mut leader = match entry_kind(me, parent) {
        Some(kind) => EntryLeader {
            pid: me.key.pid,
            entity_id: me.entity_id.to_string(),
            name: me.name.to_string(),
            executable: me.executable.to_string(),
            args: capped_args(me.args),
            same_as_process: Some(true),
            entry_meta: EntryMeta {
                meta_type: kind.into(),
            },
        },
        None => {
            let inherited = parent.and_then(|p| p.image.entry_leader.as_deref());
            match inherited {
                Some(l) => EntryLeader {
                    same_as_process: Some(l.entity_id == me.entity_id && !l.entity_id.is_empty()),
                    ..l.clone()
                },
                None if me.container.is_some() => EntryLeader::default(),
                None => return None,
            }
        }
    };
    if me.container.is_some() {
        leader.entry_meta.meta_type = CONTAINER.into();
    }
    Some(leader)
}

/// What a child inherits: the leader without the per-event flag.
pub fn inheritable(l: Option<&EntryLeader>) -> Option<Arc<EntryLeader>> {
    l.map(|l| {
        Arc::new(EntryLeader {
            same_as_process: None,
            ..l.clone()
        })
    })
}

fn leader_of(
    pid: u32,
    me: &SelfFacts<'_>,
    table: Option<&ProcessTable>,
    id: &dyn Fn(ProcKey) -> String,
) -> Option<Leader> {
    if pid == 0 {
        return None;
    }
    if pid == me.key.pid {
        return Some(Leader {
            pid,
            entity_id: me.entity_id.to_string(),
            name: me.name.to_string(),
            executable: me.executable.to_string(),
        });
    }
    let e = table?.live(pid)?;
    let img: &Image = &e.image;
    Some(Leader {
        pid,
        entity_id: id(e.key),
        name: img.name.clone(),
        executable: img.executable.clone(),
    })
}

/// `process.session_leader` and `process.group_leader`, where the table
/// knows the leading process (or it is the process itself).
pub fn leaders(
    me: &SelfFacts<'_>,
    table: Option<&ProcessTable>,
    id: &dyn Fn(ProcKey) -> String,
) -> (Option<Leader>, Option<Leader>) {
    (
        leader_of(me.session, me, table, id),
        leader_of(me.pgrp, me, table, id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, name: &str, container: Option<&str>, leader: Option<EntryLeader>) -> Entry {
        let mut t = ProcessTable::new(8, 0);
        let key = ProcKey {
            pid,
            start_ticks: 1,
        };
        t.upsert(
            key,
            None,
            Arc::new(Image {
                name: name.into(),
                container: container.map(|id| ContainerInfo {
                    id: id.into(),
                    runtime: "docker",
                    pod_uid: None,
                    name: None,
                }),
                entry_leader: inheritable(leader.as_ref()),
                ..Default::default()
            }),
        );
        t.live(pid).unwrap().clone()
    }

    fn me<'a>(pid: u32, name: &'a str, c: Option<&'a ContainerInfo>) -> SelfFacts<'a> {
        SelfFacts {
            key: ProcKey {
                pid,
                start_ticks: 5,
            },
            entity_id: name,
            name,
            executable: "/bin/x",
            args: &[],
            session: 0,
            pgrp: 0,
            tty_nr: 0,
            container: c,
        }
    }

    #[test]
    fn sshd_child_leads_and_its_children_inherit() {
        let sshd = entry(100, "sshd", None, None);
        let bash = entry_leader(&me(200, "bash", None), Some(&sshd)).unwrap();
        assert_eq!(bash.entry_meta.meta_type, "sshd");
        assert_eq!(bash.pid, 200);
        assert_eq!(bash.same_as_process, Some(true));
        let shell = entry(200, "bash", None, Some(bash));
        let ls = entry_leader(&me(300, "ls", None), Some(&shell)).unwrap();
        assert_eq!(ls.pid, 200);
        assert_eq!(ls.name, "bash");
        assert_eq!(ls.same_as_process, Some(false));
        // sshd's own privilege-separated children are not sessions.
        assert!(entry_leader(&me(101, "sshd", None), Some(&sshd)).is_none());
    }

    #[test]
    fn container_first_process_leads() {
        let c = ContainerInfo {
            id: "abc".into(),
            runtime: "docker",
            pod_uid: None,
            name: None,
        };
        let runc = entry(50, "runc", None, None);
        let init = entry_leader(&me(60, "sh", Some(&c)), Some(&runc)).unwrap();
        assert_eq!(init.entry_meta.meta_type, "container");
        assert_eq!(init.same_as_process, Some(true));
        let sh = entry(60, "sh", Some("abc"), Some(init));
        let child = entry_leader(&me(61, "id", Some(&c)), Some(&sh)).unwrap();
        assert_eq!(child.pid, 60);
        assert_eq!(child.same_as_process, Some(false));
        // Unknown parent: still marked as in a container.
        let orphan = entry_leader(&me(62, "id", Some(&c)), None).unwrap();
        assert_eq!(orphan.entry_meta.meta_type, "container");
    }

    #[test]
    fn leader_args_are_bounded() {
        let big = vec!["x".repeat(3000), "y".repeat(3000)];
        let mut m = me(70, "sh", None);
        m.args = &big;
        let sshd = entry(69, "sshd", None, None);
        let l = entry_leader(&m, Some(&sshd)).unwrap();
        assert_eq!(l.args.len(), 1);
    }

    #[test]
    fn terminal_and_init() {
        let mut m = me(400, "bash", None);
        m.session = 400;
        m.tty_nr = 34816;
        let login = entry(399, "login", None, None);
        let l = entry_leader(&m, Some(&login)).unwrap();
        assert_eq!(l.entry_meta.meta_type, "terminal");
        let init = entry(1, "systemd", None, None);
        let svc = entry_leader(&me(500, "cron", None), Some(&init)).unwrap();
        assert_eq!(svc.entry_meta.meta_type, "init");
    }

    #[test]
    fn session_and_group_leaders() {
        let mut t = ProcessTable::new(8, 0);
        t.upsert(
            ProcKey {
                pid: 10,
                start_ticks: 1,
            },
            None,
            Arc::new(Image {
                name: "dpkg".into(),
                ..Default::default()
            }),
        );
        let mut m = me(11, "sh", None);
        m.session = 10;
        m.pgrp = 11;
        let (s, g) = leaders(&m, Some(&t), &|k| format!("id{}", k.pid));
        assert_eq!(s.unwrap().name, "dpkg");
        assert_eq!(g.unwrap().name, "sh");
        m.session = 77;
        assert!(leaders(&m, Some(&t), &|_| String::new()).0.is_none());
    }
}

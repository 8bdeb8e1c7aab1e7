//! execsentry: a host sensor that watches every exec through the kernel proc
//! connector (no eBPF), tells whether it runs inside a container, evaluates
//! detection rules and sends alerts to syslog and local readers.
//!
//! An exec flows one way, from kernel to alert:
//! `netlink` (bytes → [`netlink::wire::KernelEvent`], read by
//! [`netlink::reader`]) and a `capture` source (`fanotify`: argv at exec
//! time) → `pipeline`, whose [`join`] pairs each exec with its capture
//! (else `/proc/<pid>/cmdline`), then `enrich` (reading `/proc` via
//! `procfs`, `container` detection, `metadata`, `identity`) →
//! [`event::Event`] → `rules` → `sink`. `daemon` owns the single mio loop
//! and only dispatches; [`counters`] declares every counter; `cli` and
//! `main` only parse and dispatch.

pub mod bytes;
pub mod capture;
pub mod cli;
pub mod config;
pub mod container;
pub mod counters;
pub mod daemon;
pub mod enrich;
pub mod envvars;
pub mod event;
pub mod fanotify;
pub mod fsclass;
pub mod identity;
pub mod join;
pub mod metadata;
pub mod netlink;
pub mod pacing;
pub mod pipeline;
pub mod privilege;
pub mod proc_reader;
pub mod process_table;
pub mod procfs;
pub mod rule_paths;
pub mod rules;
pub mod sdnotify;
pub mod seqgap;
pub mod session;
pub mod sink;
pub mod stages;
pub mod status;
pub mod tamper;

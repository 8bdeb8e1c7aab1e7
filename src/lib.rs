//! execsentry: a host sensor that watches every exec through the kernel proc
//! connector (no eBPF), tells whether it runs inside a container, evaluates
//! detection rules and sends alerts to syslog and local readers.
//!
//! Data flow, from kernel to alert:
//! `netlink` (bytes → [`netlink::wire::KernelEvent`]) → `pipeline`
//! (`process_table`, `enrich` reading `/proc` via `procfs`, `container`
//! detection) → [`event::Event`] → `rules` → `sink`. `daemon` owns the single
//! mio loop; `cli` and `main` only parse and dispatch.

pub mod bytes;
pub mod capture;
pub mod captures;
pub mod cli;
pub mod config;
pub mod container;
pub mod counters;
pub mod daemon;
pub mod enrich;
pub mod envvars;
pub mod event;
pub mod fanotify;
pub mod identity;
pub mod metadata;
pub mod netlink;
pub mod pacing;
pub mod pipeline;
pub mod privilege;
pub mod process_table;
pub mod procfs;
pub mod rules;
pub mod seqgap;
pub mod session;
pub mod sink;
pub mod status;
pub mod tamper;

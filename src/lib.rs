//! execsentry: a host sensor that watches every exec through the kernel proc
//! connector (no eBPF), tells whether it runs inside a container, evaluates
//! detection rules and sends alerts to syslog and local readers.
//!
//! Data flow, from kernel to alert:
//! `netlink` (bytes → [`netlink::wire::KernelEvent`]) → `process_table` →
//! `enrich` (reads `/proc` via `procfs`, `container` detection) →
//! [`event::Event`] → `rules` → `sink`. `daemon` owns the single mio loop.

pub mod bytes;
pub mod config;
pub mod container;
pub mod event;
pub mod netlink;
pub mod procfs;
pub mod rules;
pub mod sink;

//! Micro-benchmarks of the pure pieces on the per-exec hot path: netlink
//! decoding, container detection, event shaping, rule evaluation of the
//! shipped rule set, JSON and syslog formatting. `make bench` runs it
//! (`cargo bench --bench hot_path`); it prints one line per piece and writes
//! `target/bench/micro.json`. Figures are thread CPU time per operation, so a
//! busy machine slows them less than wall time would.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use execsentry::config::{Format, Payload};
use execsentry::container;
use execsentry::enrich::{self, EventInput, HostContext, ProcFacts};
use execsentry::event::{Event, Namespaces};
use execsentry::netlink::wire::{self, KernelEvent, Record};
use execsentry::procfs::Stat;
use execsentry::rules::RuleSet;
use execsentry::sink::format::{self, Formatter};

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` until it used about half a second of CPU; returns µs per call.
fn measure(mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let start = thread_cpu();
    let mut n = 0u64;
    while thread_cpu() - start < Duration::from_millis(500) {
        for _ in 0..1000 {
            f();
        }
        n += 1000;
    }
    (thread_cpu() - start).as_secs_f64() * 1e6 / n as f64
}

fn exec_datagram() -> Vec<u8> {
    let mut buf = Vec::new();
    wire::encode_record(
        &Record {
            seq: 1,
            ack: 0,
            cpu: 0,
            timestamp_ns: 42,
            event: KernelEvent::Exec {
                pid: 4242,
                tgid: 4242,
                ns: 42,
            },
        },
        &mut buf,
    );
    buf
}

const DOCKER_CGROUP: &str = "12:pids:/docker/3f1c0a9e7b2d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6\n\
11:memory:/docker/3f1c0a9e7b2d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6\n\
0::/system.slice/docker-3f1c0a9e7b2d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6.scope\n";

fn facts(args: &[&str], cgroup: &str) -> ProcFacts {
    let mut cmdline = Vec::new();
    for a in args {
        cmdline.extend_from_slice(a.as_bytes());
        cmdline.push(0);
    }
    ProcFacts {
        pid: 4242,
        stat: Some(Stat {
            comm: args[0].rsplit('/').next().unwrap().as_bytes().to_vec(),
            ppid: 1,
            start_ticks: 5000,
            ..Default::default()
        }),
        cmdline,
        exe: Some(format!("/usr/bin/{}", args[0]).into_bytes()),
        cgroup: cgroup.to_string(),
        ns: Some(Namespaces {
            pid: 2,
            mnt: 2,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn shape(f: &ProcFacts, host: &HostContext) -> Event {
    enrich::build_event(&EventInput {
        facts: f,
        parent: None,
        parent_pid: 1,
        table: None,
        host,
        sequence: 1,
        event_id: "bench-1".into(),
        timestamp: "2026-11-26T07:00:00.000000000Z".into(),
    })
}

fn main() {
    let host = HostContext {
        hostname: "bench".into(),
        host_ns: Namespaces {
            pid: 1,
            mnt: 1,
            ..Default::default()
        },
        clock_ticks: 100,
        ..Default::default()
    };
    let rules_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    let rules = RuleSet::load(&[rules_dir]).expect("shipped rules load");
    let mixed: Vec<Event> = [
        (
            vec!["kubectl", "exec", "-it", "web-0", "--", "sh"],
            DOCKER_CGROUP,
        ),
        (
            vec!["ls", "-la", "/tmp"],
            "0::/user.slice/session-1.scope\n",
        ),
        (vec!["python3", "-m", "http.server"], DOCKER_CGROUP),
        (
            vec!["ctr", "-n", "k8s.io", "tasks", "exec", "x", "sh"],
            "0::/\n",
        ),
        (vec!["curl", "-k", "https://n:10250/pods"], DOCKER_CGROUP),
        (
            vec!["postgres", "-D", "/var/lib/postgresql/16/main"],
            "0::/system.slice/postgresql.service\n",
        ),
    ]
    .iter()
    .map(|(a, c)| shape(&facts(a, c), &host))
    .collect();
    let alert = {
        let mut out = Vec::new();
        rules.evaluate(&mixed[0], &mut out);
        rules.alert(&mixed[0], &out[0])
    };
    let syslog = Formatter {
        format: Format::Rfc5424,
        payload: Payload::Message,
        facility: 10 << 3,
        app_name: "execsentry".into(),
        procid: 1,
        max_bytes: 8192,
        hostname: true,
    };
    let cef = Formatter {
        format: Format::Cef,
        ..syslog.clone()
    };

    let datagram = exec_datagram();
    let f = facts(
        &["kubectl", "exec", "-it", "web-0", "--", "sh"],
        DOCKER_CGROUP,
    );
    let ns = f.ns.unwrap();
    let mut matches = Vec::with_capacity(16);
    let mut i = 0usize;
    let figures = [
        (
            "netlink decode (one exec datagram)",
            measure(|| {
                black_box(wire::decode(black_box(&datagram)).count());
            }),
        ),
        (
            "container detection (docker, cgroup v1+v2)",
            measure(|| {
                black_box(container::detect(
                    black_box(DOCKER_CGROUP),
                    &ns,
                    &host.host_ns,
                ));
            }),
        ),
        (
            "event shaping (facts -> ECS event)",
            measure(|| {
                black_box(shape(black_box(&f), &host));
            }),
        ),
        (
            "rule evaluation, shipped set, mixed events",
            measure(|| {
                matches.clear();
                rules.evaluate(black_box(&mixed[i % mixed.len()]), &mut matches);
                i += 1;
            }),
        ),
        (
            "JSON line of an event",
            measure(|| {
                black_box(format::json_line(black_box(&mixed[0])));
            }),
        ),
        (
            "RFC 5424 line of an alert",
            measure(|| {
                black_box(syslog.format(black_box(&alert)));
            }),
        ),
        (
            "CEF line of an alert",
            measure(|| {
                black_box(cef.format(black_box(&alert)));
            }),
        ),
    ];
    let mut json = String::from("{");
    for (k, (name, us)) in figures.iter().enumerate() {
        println!("{name:48} {us:8.3} µs");
        if k > 0 {
            json.push(',');
        }
        json.push_str(&format!("\"{name}\":{us:.4}"));
    }
    json.push('}');
    println!("rules: {} shipped", rules.len());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("micro.json"), json + "\n");
}

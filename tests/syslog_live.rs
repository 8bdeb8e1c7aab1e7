//! The syslog sink against a real rsyslogd: unix, UDP, TCP (octet counting)
//! and TLS (gtls, test CA made here with openssl), each input written raw
//! (`%rawmsg%`) to its own file. Needs root and the packages rsyslog,
//! rsyslog-gnutls and openssl.

use std::io::Write;
use std::time::{Duration, Instant};

use execsentry::config::{Format, OutputConfig, Payload, SyslogConfig, Transport};
use execsentry::event::{Container, Event, EventMeta, Host, Process, RuleRef, User};
use execsentry::sink::{Outputs, TOKEN_BASE};

mod common;

use common::rsyslog::Collector;

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("!!! SKIPPED {test}: needs root to run a real rsyslogd !!!");
    false
}

fn alert(i: usize, text: &str) -> Event {
    Event {
        timestamp: "2024-05-01T12:34:56.5Z".into(),
        event: EventMeta {
            kind: "alert".into(),
            id: format!("ev-{i}"),
            severity: Some(73),
            risk_score: Some(73.0),
            ..Default::default()
        },
        host: Host {
            hostname: "node1".into(),
            ..Default::default()
        },
        process: Process {
            pid: 1000 + i as u32,
            name: "sh".into(),
            executable: "/bin/sh".into(),
            command_line: format!("sh -c {text}"),
            user: User {
                id: "0".into(),
                name: Some("root".into()),
            },
            ..Default::default()
        },
        container: Some(Container {
            id: "0123456789abcdef".into(),
            runtime: "docker".into(),
            name: None,
            ..Default::default()
        }),
        rule: Some(RuleRef {
            id: "ES-0001".into(),
            name: "Shell in container".into(),
            ..Default::default()
        }),
        message: Some(format!("alert #{i}: {text}")),
        ..Default::default()
    }
}

fn outputs(c: &Collector, transport: Transport, format: Format, queue: usize) -> Outputs {
    let mut cfg = OutputConfig::default();
    cfg.socket.enabled = false;
    cfg.syslog = SyslogConfig {
        transport,
        format,
        queue,
        path: c.p("log.sock"),
        address: format!(
            "127.0.0.1:{}",
            match transport {
                Transport::Udp => c.udp,
                Transport::Tls => c.tls,
                _ => c.tcp,
            }
        ),
        payload: Payload::Message,
        ca_file: Some(c.p("ca.pem")),
        server_name: Some("localhost".into()),
        ..SyslogConfig::default()
    };
    Outputs::new(&cfg, false).expect("outputs")
}

/// The daemon's loop in miniature: poll, hand our tokens over, tick.
struct Loop {
    poll: mio::Poll,
    events: mio::Events,
}

impl Loop {
    fn new(o: &mut Outputs) -> Loop {
        let poll = mio::Poll::new().expect("poll");
        o.register(poll.registry()).expect("register");
        Loop {
            poll,
            events: mio::Events::with_capacity(64),
        }
    }

    fn run_until(&mut self, o: &mut Outputs, secs: u64, mut done: impl FnMut(&Outputs) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(o) {
            assert!(
                Instant::now() < deadline,
                "timed out; counters {:?}",
                o.counters()
            );
            let _ = self
                .poll
                .poll(&mut self.events, Some(Duration::from_millis(20)));
            for ev in self.events.iter() {
                assert!(ev.token().0 >= TOKEN_BASE);
                o.handle(self.poll.registry(), ev);
            }
            o.tick(self.poll.registry(), Instant::now());
        }
    }
}

fn counter(o: &Outputs, name: &str) -> u64 {
    let c = execsentry::counters::Counter::from_name(name).expect("a registered counter");
    o.counters().get(c)
}

const HOSTILE: &[&str] = &[
    "a\nb\r\n<13>1 2024-01-01T00:00:00Z evil x - - - forged",
    "]\" forged=\"1\"] [x@1 a=\"b\"]",
    "a|b|c|10| k=v cs1=forged \\",
    "\u{1b}[31mred\u{7f}\u{202e}",
];

/// Sends `n` plain alerts, the hostile ones and a 1 MiB argv; returns what
/// the collector wrote, once all arrived.
fn deliver(c: &Collector, t: Transport, f: Format, file: &str, n: usize) -> Vec<String> {
    let mut o = outputs(c, t, f, 10_000);
    let mut lp = Loop::new(&mut o);
    let mut evs: Vec<Event> = (0..n).map(|i| alert(i, "plain")).collect();
    for (k, h) in HOSTILE.iter().enumerate() {
        evs.push(alert(n + k, h));
    }
    evs.push(alert(n + HOSTILE.len(), &"A".repeat(1 << 20)));
    for e in &evs {
        o.emit(e);
    }
    let total = evs.len() as u64;
    lp.run_until(&mut o, 20, |o| counter(o, "syslog.sent") == total);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.lines(file).len() < evs.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = c.lines(file);
    assert_eq!(lines.len(), evs.len(), "{lines:#?}");
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.contains(&format!("alert #{i}:")) || f == Format::Cef,
            "order at {i}: {l}"
        );
        assert!(l.len() <= 8192, "line {i} is {} bytes", l.len());
        assert!(!l.chars().any(|c| c.is_control()), "raw control in {l}");
    }
    assert!(lines.last().unwrap().ends_with("...[truncated]"));
    assert_eq!(counter(&o, "syslog.dropped"), 0);
    lines
}

#[test]
fn rfc5424_over_unix_datagram() {
    if !root_or_skip("rfc5424_over_unix_datagram") {
        return;
    }
    let c = Collector::new();
    let lines = deliver(&c, Transport::Unix, Format::Rfc5424, "unix.log", 50);
    let pid = std::process::id();
    assert_eq!(
        lines[0],
        format!(
            "<83>1 2024-05-01T12:34:56.500000Z node1 execsentry {pid} alert [execsentry@32473 \
             rule_id=\"ES-0001\" severity=\"73\" risk_score=\"73\" pid=\"1000\" \
             container_id=\"0123456789abcdef\" runtime=\"docker\" event_id=\"ev-0\"] alert #0: plain"
        )
    );
    // The SD survives hostile text in MSG: forged fields stay inside MSG.
    assert!(
        lines[50].contains("] alert #50: a\\nb\\r\\n<13>1"),
        "{}",
        lines[50]
    );
    assert!(
        lines[51].ends_with("alert #51: ]\" forged=\"1\"] [x@1 a=\"b\"]"),
        "{}",
        lines[51]
    );
}

#[test]
fn rfc3164_over_udp() {
    if !root_or_skip("rfc3164_over_udp") {
        return;
    }
    let c = Collector::new();
    let lines = deliver(&c, Transport::Udp, Format::Rfc3164, "udp.log", 50);
    let pid = std::process::id();
    assert_eq!(
        lines[0],
        format!("<83>May  1 12:34:56 node1 execsentry[{pid}]: alert #0: plain")
    );
}

#[test]
fn cef_over_tcp_octet_counting() {
    if !root_or_skip("cef_over_tcp_octet_counting") {
        return;
    }
    let c = Collector::new();
    let lines = deliver(&c, Transport::Tcp, Format::Cef, "tcp.log", 50);
    assert!(
        lines[0].starts_with(
            "<83>May  1 12:34:56 node1 CEF:0|execsentry|execsentry|0.1.0|ES-0001|Shell in container|7|rt=1714566896500 "
        ),
        "{}",
        lines[0]
    );
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.contains(&format!(" externalId=ev-{i} ")),
            "order at {i}: {l}"
        );
    }
    // `=` and `\` escaped in the extension: the forged key is not a key.
    let forged = &lines[52];
    assert!(
        forged.contains("cs3=sh -c a|b|c|10| k\\=v cs1\\=forged \\\\\\\\ "),
        "{forged}"
    );
}

#[test]
fn rfc5424_over_tls() {
    if !root_or_skip("rfc5424_over_tls") {
        return;
    }
    let c = Collector::new();
    let lines = deliver(&c, Transport::Tls, Format::Rfc5424, "tls.log", 50);
    assert!(lines[0].starts_with("<83>1 2024-05-01T12:34:56.500000Z node1 execsentry "));
}

/// Collector down mid-stream: the queue (5) holds the first 5 of 8 alerts,
/// they arrive in order after the restart, and exactly 3 are counted lost.
#[test]
fn outage_queues_then_drains_and_counts_drops() {
    if !root_or_skip("outage_queues_then_drains_and_counts_drops") {
        return;
    }
    let mut c = Collector::new();
    let mut o = outputs(&c, Transport::Tcp, Format::Rfc5424, 5);
    let mut lp = Loop::new(&mut o);
    for i in 0..10 {
        o.emit(&alert(i, "before"));
    }
    lp.run_until(&mut o, 20, |o| counter(o, "syslog.sent") == 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.lines("tcp.log").len() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    c.stop();
    let started = Instant::now();
    for i in 10..18 {
        o.emit(&alert(i, "during"));
    }
    assert_eq!(counter(&o, "syslog.connected"), 0, "{:?}", o.counters());
    assert_eq!(counter(&o, "syslog.dropped"), 3);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "emit blocked"
    );
    c.start();
    lp.run_until(&mut o, 40, |o| counter(o, "syslog.sent") == 15);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.lines("tcp.log").len() < 15 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = c.lines("tcp.log");
    let got: Vec<usize> = lines
        .iter()
        .map(|l| {
            let at = l.find("alert #").expect("alert") + 7;
            l[at..].split(':').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(got, (0..15).collect::<Vec<_>>());
    assert_eq!(counter(&o, "syslog.dropped"), 3);
    let _ = std::io::stderr().flush();
}

/// Alerts per second through the TCP sink into rsyslog (printed, not
/// asserted beyond a sanity floor): run with `--nocapture` to see it.
#[test]
fn throughput_tcp() {
    if !root_or_skip("throughput_tcp") {
        return;
    }
    let c = Collector::new();
    let mut o = outputs(&c, Transport::Tcp, Format::Rfc5424, 100_000);
    let mut lp = Loop::new(&mut o);
    lp.run_until(&mut o, 10, |o| counter(o, "syslog.connected") == 1);
    let n = 20_000u64;
    let ev = alert(0, "throughput");
    let t0 = Instant::now();
    for _ in 0..n {
        o.emit(&ev);
    }
    lp.run_until(&mut o, 60, |o| counter(o, "syslog.sent") == n);
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "syslog tcp sink: {n} alerts in {secs:.3}s = {:.0} alerts/s",
        n as f64 / secs
    );
    assert_eq!(counter(&o, "syslog.dropped"), 0);
}

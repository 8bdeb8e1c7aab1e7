//! The local alert socket with real readers: fan-out to three readers, a
//! stalled reader dropped without holding up the rest, permissions, stale
//! files, `tail` rendering, and config files from tests/data/config.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use execsentry::config::{Config, OutputConfig};
use execsentry::event::{Container, Event, EventMeta, Process, RuleRef, User};
use execsentry::sink::{Outputs, tail};

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("!!! SKIPPED {test}: needs root (socket ownership and group) !!!");
    false
}

fn alert(i: usize, cmd: &str) -> Event {
    Event {
        timestamp: "2024-05-01T12:34:56Z".into(),
        event: EventMeta {
            kind: "alert".into(),
            id: format!("ev-{i}"),
            severity: Some(99),
            ..Default::default()
        },
        process: Process {
            pid: 7,
            command_line: cmd.into(),
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
            id: "ES-0002".into(),
            name: "nsenter".into(),
            ..Default::default()
        }),
        message: Some(format!("#{i}")),
        ..Default::default()
    }
}

fn socket_outputs(path: &Path, buffer: usize) -> OutputConfig {
    let mut cfg = OutputConfig::default();
    cfg.syslog.enabled = false;
    cfg.socket.path = path.to_path_buf();
    cfg.socket.mode = "0640".into();
    cfg.socket.reader_buffer = buffer;
    cfg
}

fn pump(o: &mut Outputs, poll: &mut mio::Poll, events: &mut mio::Events) {
    let _ = poll.poll(events, Some(Duration::from_millis(1)));
    for ev in events.iter() {
        o.handle(poll.registry(), ev);
    }
    o.tick(poll.registry(), Instant::now());
}

fn counter(o: &Outputs, name: &str) -> u64 {
    let c = execsentry::counters::Counter::from_name(name).expect("a registered counter");
    o.counters().get(c)
}

#[test]
fn three_readers_get_everything_and_a_stalled_one_is_dropped() {
    if !root_or_skip("three_readers_get_everything_and_a_stalled_one_is_dropped") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/alerts.sock");
    let mut o = Outputs::new(&socket_outputs(&path, 64 * 1024), false).unwrap();
    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(64);
    o.register(poll.registry()).unwrap();

    // Permissions as configured; the group `execsentry` does not exist in
    // the test environment, so the socket keeps root's group.
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    if nix::unistd::Group::from_name("execsentry")
        .unwrap()
        .is_none()
    {
        assert_eq!(meta.gid(), 0);
    }

    const N: usize = 3000;
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let s = UnixStream::connect(&path).unwrap();
            std::thread::spawn(move || {
                // Read fast, parse later: a reader that keeps up.
                let lines: Vec<String> = BufReader::new(s)
                    .lines()
                    .map_while(Result::ok)
                    .take(N)
                    .collect();
                lines
                    .iter()
                    .map(|l| serde_json::from_str::<Event>(l).unwrap().message.unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut stalled = UnixStream::connect(&path).unwrap();
    while counter(&o, "socket.readers") < 4 {
        pump(&mut o, &mut poll, &mut events);
    }
    let pad = "x".repeat(1000);
    let mut slowest = Duration::ZERO;
    for i in 0..N {
        let t = Instant::now();
        o.emit(&alert(i, &pad));
        slowest = slowest.max(t.elapsed());
        pump(&mut o, &mut poll, &mut events);
        if i % 20 == 19 {
            // Pace like a real burst of alerts so live readers keep up; the
            // stalled reader falls behind regardless.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !readers.iter().all(|r| r.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "readers stuck: {:?}",
            o.counters()
        );
        pump(&mut o, &mut poll, &mut events);
    }
    let want: Vec<String> = (0..N).map(|i| format!("#{i}")).collect();
    for r in readers {
        let got = r.join().unwrap();
        assert_eq!(
            got.len(),
            N,
            "a live reader was cut off: {:?}",
            o.counters()
        );
        assert!(got == want, "out of order");
    }
    assert_eq!(counter(&o, "socket.slow_readers"), 1, "{:?}", o.counters());
    assert!(slowest < Duration::from_millis(50), "emit took {slowest:?}");
    // The stalled reader sees a clean end after what it had buffered.
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    stalled.read_to_end(&mut rest).unwrap();
    assert!(rest.len() < N * pad.len());

    drop(o);
    assert!(!path.exists(), "socket removed on drop");
}

#[test]
fn stale_socket_is_replaced_but_other_files_are_not() {
    if !root_or_skip("stale_socket_is_replaced_but_other_files_are_not") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.sock");
    drop(UnixListener::bind(&path).unwrap()); // leaves a dead socket file
    let o = Outputs::new(&socket_outputs(&path, 65536), false).unwrap();
    // A live one is not stolen.
    assert!(Outputs::new(&socket_outputs(&path, 65536), false).is_err());
    drop(o);
    std::fs::write(&path, "not a socket").unwrap();
    let e = Outputs::new(&socket_outputs(&path, 65536), false)
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

#[test]
fn tail_renders_a_real_alert() {
    if !root_or_skip("tail_renders_a_real_alert") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.sock");
    let mut o = Outputs::new(&socket_outputs(&path, 65536), false).unwrap();
    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(64);
    o.register(poll.registry()).unwrap();
    let plain = UnixStream::connect(&path).unwrap();
    let raw = UnixStream::connect(&path).unwrap();
    while counter(&o, "socket.readers") < 2 {
        pump(&mut o, &mut poll, &mut events);
    }
    o.emit(&alert(1, "nsenter -t 1 -m sh -c 'echo\n\u{1b}[2J'"));
    pump(&mut o, &mut poll, &mut events);
    drop(o); // EOF for the readers
    let mut out = Vec::new();
    tail::follow(plain, false, &mut out, false).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "2024-05-01T12:34:56Z critical ES-0002 docker:0123456789ab root(0) \
         nsenter -t 1 -m sh -c 'echo\\n\\x1b[2J'\n"
    );
    let mut out = Vec::new();
    tail::follow(raw, true, &mut out, false).unwrap();
    let line = String::from_utf8(out).unwrap();
    assert!(line.starts_with("{\"@timestamp\":") && line.ends_with("}\n"));
    assert_eq!(line.lines().count(), 1);
}

#[test]
fn config_files_in_tests_data() {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config");
    let e = Config::load(&d.join("unknown_key.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown_key.toml:6:1: unknown field `adress`"),
        "{e}"
    );
    let e = Config::load(&d.join("world_writable.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("world_writable.toml:2: output.socket.mode"),
        "{e}"
    );
    let c = Config::load(&d.join("tls.toml")).unwrap();
    assert_eq!(
        c.output.syslog.server_name.as_deref(),
        Some("collector.example.org")
    );
}

#[test]
fn readers_beyond_the_limit_are_refused_and_counted() {
    if !root_or_skip("readers_beyond_the_limit_are_refused_and_counted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.sock");
    let mut o = Outputs::new(&socket_outputs(&path, 64 * 1024), false).unwrap();
    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(64);
    o.register(poll.registry()).unwrap();
    let extra = 6;
    let max = execsentry::sink::socket::MAX_READERS;
    let _clients: Vec<UnixStream> = (0..max + extra)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter(&o, "socket.refused_readers") < extra as u64 && Instant::now() < deadline {
        pump(&mut o, &mut poll, &mut events);
    }
    assert_eq!(counter(&o, "socket.readers"), max as u64);
    assert_eq!(counter(&o, "socket.refused_readers"), extra as u64);
}

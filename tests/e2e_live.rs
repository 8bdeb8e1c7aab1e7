//! End to end, as deployed: a live container exec → the daemon running from
//! a config file → a real rsyslogd over unix, UDP, TCP and TLS, and
//! `execsentry tail` on the alert socket, all at the same time. Needs root.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::rsyslog::Collector;
use common::{Sensor, rules_dir, unique_name};

const WAIT: Duration = Duration::from_secs(15);

/// A sensor's config: one syslog transport, the alert socket, and the
/// shipped rules; written root-owned 0600 as the daemon insists.
fn config(dir: &Path, c: &Collector, transport: &str) -> std::path::PathBuf {
    let target = match transport {
        "unix" => format!("path = \"{}\"", c.p("log.sock").display()),
        "udp" => format!("address = \"127.0.0.1:{}\"", c.udp),
        "tcp" => format!("address = \"127.0.0.1:{}\"", c.tcp),
        _ => format!(
            "address = \"127.0.0.1:{}\"\nca_file = \"{}\"\nserver_name = \"localhost\"",
            c.tls,
            c.p("ca.pem").display()
        ),
    };
    let text = format!(
        "[sensor]\nrules = [\"{rules}\"]\ncapture = \"fanotify\"\n\n\
         [output.syslog]\nenabled = true\ntransport = \"{transport}\"\n{target}\n\
         format = \"rfc5424\"\n\n\
         [output.socket]\nenabled = true\npath = \"{sock}\"\nmode = \"0600\"\ngroup = \"root\"\n",
        rules = rules_dir().display(),
        sock = dir.join(format!("{transport}.sock")).display(),
    );
    let path = dir.join(format!("{transport}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `execsentry tail` as a reader would run it; its lines on a channel.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn spawn(socket: &Path, json: bool) -> Tail {
        let mut cmd = Command::new(Sensor::binary());
        cmd.args(["tail", "--socket", socket.to_str().unwrap()]);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Tail { child, lines }
    }

    fn wait_for(&self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_line(c: &Collector, file: &str, needles: &[&str]) -> Option<String> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let hit = c
            .lines(file)
            .into_iter()
            .find(|l| needles.iter().all(|n| l.contains(n)));
        if let Some(l) = hit {
            return Some(l);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn a_container_exec_reaches_rsyslog_over_four_transports_and_tail() {
    if !common::require_root() {
        return;
    }
    let collector = Collector::new();
    let dir = tempfile::tempdir().unwrap();
    let transports = ["unix", "udp", "tcp", "tls"];
    let mut sensors: Vec<Sensor> = transports
        .iter()
        .map(|t| {
            let cfg = config(dir.path(), &collector, t);
            let control = dir.path().join(format!("{t}.control"));
            Sensor::spawn(&[
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "--control",
                control.to_str().unwrap(),
            ])
        })
        .collect();
    for s in &mut sensors {
        s.wait_ready(WAIT);
    }
    let tail_json = Tail::spawn(&dir.path().join("tcp.sock"), true);
    let tail_text = Tail::spawn(&dir.path().join("tls.sock"), false);
    std::thread::sleep(Duration::from_millis(300));

    // The exec: kubectl exec -it … inside a real container.
    let marker = unique_name("e2e");
    let argv = ["kubectl", "exec", "-it", marker.as_str(), "--", "sh"];
    let c = common::AnyContainer::start();
    c.exec(&argv);
    let id = c.id().to_string();

    for (t, file) in transports
        .iter()
        .zip(["unix.log", "udp.log", "tcp.log", "tls.log"])
    {
        // The host's `docker exec …` alerts too (container_id="host"): take
        // the alert from inside the container.
        let inside = format!("container_id=\"{id}\"");
        let line = wait_for_line(&collector, file, &[&marker, &inside])
            .unwrap_or_else(|| panic!("nothing with {marker} from {id} over {t}"));
        assert!(
            line.contains("[execsentry@32473 ") && line.contains("rule_id=\"t1609-"),
            "{t}: {line}"
        );
    }
    // As in syslog, the host's `docker exec` alerts too: wait for the one
    // from inside the container.
    let json = tail_json
        .wait_for(&format!("\"id\":\"{id}\""))
        .expect("tail --json got the alert from the container");
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(v["event"]["kind"], "alert");
    assert_eq!(v["container"]["id"], id.as_str(), "{json}");
    let text = tail_text.wait_for(&id[..12]).expect("tail got the alert");
    assert!(text.contains("t1609-") && !text.starts_with('{'), "{text}");
}

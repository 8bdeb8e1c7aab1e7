//! A real rsyslogd for the tests: unix, UDP, TCP (octet counting) and TLS
//! (gtls, a test CA made here with openssl) inputs on loopback, each written
//! raw (`%rawmsg%`) to its own file (`unix.log`, `udp.log`, `tcp.log`,
//! `tls.log`). Needs root and the packages rsyslog, rsyslog-gnutls, openssl.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running rsyslogd, killed on drop.
pub struct Collector {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub udp: u16,
    pub tcp: u16,
    pub tls: u16,
}

fn free_port() -> u16 {
    // Both protocols free on the same number keeps the config simple.
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = t.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

impl Collector {
    pub fn new() -> Collector {
        let dir = tempfile::tempdir().expect("tempdir");
        make_certs(dir.path());
        let mut c = Collector {
            dir,
            child: None,
            udp: free_port(),
            tcp: free_port(),
            tls: free_port(),
        };
        c.start();
        c
    }

    pub fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn start(&mut self) {
        let d = self.dir.path().display();
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="64k"
  DefaultNetstreamDriverCAFile="{d}/ca.pem"
  DefaultNetstreamDriverCertFile="{d}/srv.pem"
  DefaultNetstreamDriverKeyFile="{d}/srv.key")
template(name="raw" type="string" string="%rawmsg%\n")
module(load="imuxsock" SysSock.Use="off")
module(load="imudp")
module(load="imtcp" maxSessions="100")
input(type="imuxsock" Socket="{d}/log.sock" ruleset="unix")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls"
  streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
ruleset(name="unix") {{ action(type="omfile" file="{d}/unix.log" template="raw") }}
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="raw") }}
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="raw") }}
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="raw") }}
"#,
            udp = self.udp,
            tcp = self.tcp,
            tls = self.tls
        );
        std::fs::write(self.p("rsyslog.conf"), conf).expect("conf");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(self.p("rsyslog.conf"))
            .arg("-i")
            .arg(self.p("rsyslog.pid"))
            .spawn()
            .expect("rsyslogd (apt-get install rsyslog rsyslog-gnutls)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let up = TcpStream::connect(("127.0.0.1", self.tcp)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.tls)).is_ok()
                && self.p("log.sock").exists();
            if up {
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("rsyslogd did not come up");
    }

    /// SIGTERM and wait: rsyslog writes what it received, closes sessions.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    pub fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read(self.p(name))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let st = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(st.success(), "openssl {args:?}");
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=execsentry test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

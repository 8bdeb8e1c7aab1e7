//! `execsentry debug capture --source kprobe`: runs the kprobe source
//! alone and prints one JSON line per capture, for the kernel matrix
//! (tests/vm) before and besides the exec join. Hidden from `--help`.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use mio::{Events, Poll, Token};

use super::{KprobeSource, Options};
use crate::capture::{AllowAll, CaptureSource};
use crate::counters::Counters;

#[derive(Debug, Subcommand)]
pub enum DebugAction {
    /// Print what a capture source yields, one JSON line per exec.
    Capture(CaptureArgs),
}

pub fn run(a: &DebugAction) -> anyhow::Result<u8> {
    match a {
        DebugAction::Capture(c) => capture(c),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DebugSource {
    Kprobe,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    #[arg(long, value_enum, default_value = "kprobe")]
    pub source: DebugSource,
    /// Stop after this many captures (0: until SIGTERM/SIGINT or --seconds).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
    #[arg(long, default_value_t = 128 * 1024)]
    pub max_args_bytes: usize,
    #[arg(long, default_value_t = super::DEFAULT_RING_PAGES)]
    pub ring_pages: usize,
    /// Bytes of user stack copied per exec.
    #[arg(long, default_value_t = super::DEFAULT_STACK_DUMP)]
    pub stack_dump: u32,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Exit code 3 (as `run`) when the source is unavailable.
pub fn capture(a: &CaptureArgs) -> anyhow::Result<u8> {
    let mut opts = Options::new(a.max_args_bytes);
    opts.ring_pages = a.ring_pages;
    opts.stack_dump = a.stack_dump;
    let mut src = match KprobeSource::open(opts) {
        Ok(s) => s,
        Err(u) => {
            eprintln!("execsentry: {u}");
            return Ok(3);
        }
    };
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let mut poll = Poll::new()?;
    src.register(poll.registry(), Token(0))?;
    eprintln!(
        "execsentry: ready (capture=kprobe, group={}, stack_dump={})",
        src.group(),
        src.stack_dump()
    );
    let mut events = Events::with_capacity(64);
    let mut out = Vec::new();
    let (mut n, start) = (0u64, Instant::now());
    let stdout = io::stdout();
    let mut w = io::BufWriter::new(stdout.lock());
    while !STOP.load(Ordering::Relaxed) {
        if a.seconds > 0 && start.elapsed() >= Duration::from_secs(a.seconds) {
            break;
        }
        match poll.poll(&mut events, Some(Duration::from_millis(20))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => r?,
        }
        src.on_ready(None, &mut AllowAll, &mut out);
        n += print(&mut w, &mut out)?;
        if a.count > 0 && n >= a.count {
            break;
        }
    }
    // Whatever the kernel wrote until now.
    std::thread::sleep(Duration::from_millis(50));
    src.on_ready(None, &mut AllowAll, &mut out);
    n += print(&mut w, &mut out)?;
    let mut c = Counters::default();
    src.counters(&mut c);
    writeln!(
        w,
        "{}",
        serde_json::json!({ "counters": c.to_map(), "captures": n })
    )?;
    w.flush()?;
    Ok(0)
}

fn print(w: &mut impl Write, out: &mut Vec<crate::capture::Capture>) -> io::Result<u64> {
    let mut n = 0;
    for c in out.drain(..) {
        let args: Vec<_> = c
            .argv
            .split(|&b| b == 0)
            .map(String::from_utf8_lossy)
            .collect();
        let nargs = c.argv.iter().filter(|&&b| b == 0).count();
        let line = serde_json::json!({
            "pid": c.pid,
            "comm": c.comm.as_deref().map(String::from_utf8_lossy),
            "argv": &args[..nargs.min(args.len())],
            "argv_hex": hex(&c.argv),
            "truncated": c.truncated,
            "args_read": c.args_read,
        });
        writeln!(w, "{line}")?;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

//! Every counter the sensor keeps, declared once: its stable name (what
//! `status`, the `stats:` line and other tools read), its kind and the part
//! of the sensor that updates it. Nothing else spells a counter's name; a
//! loss is a [`Kind`], not a naming convention.

/// What a counter means to its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something was lost or degraded: an event, a field, an alert, a
    /// reader. `status` lists these under `losses:` and the `stats:` line is
    /// written when one moved.
    Loss,
    /// Work done: events seen, alerts sent.
    Throughput,
    /// Cache behaviour: hits, misses and evictions are normal.
    Cache,
    /// A level, not a sum: queue depth, live entries, a connected flag.
    Gauge,
}

/// The part of the sensor that updates a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Netlink,
    Pipeline,
    Join,
    Table,
    Metadata,
    Identity,
    Rules,
    Fanotify,
    Kprobe,
    Syslog,
    Socket,
    File,
    Stdout,
    Daemon,
}

macro_rules! registry {
    ($( $(#[$doc:meta])* $id:ident = $name:literal, $kind:ident, $owner:ident; )*) => {
        /// One counter of the registry.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Counter { $($(#[$doc])* $id),* }

        impl Counter {
            /// Every counter, in declaration order.
            pub const ALL: &'static [Counter] = &[$(Counter::$id),*];

            pub const fn name(self) -> &'static str {
                match self { $(Counter::$id => $name),* }
            }

            pub const fn kind(self) -> Kind {
                match self { $(Counter::$id => Kind::$kind),* }
            }

            pub const fn owner(self) -> Owner {
                match self { $(Counter::$id => Owner::$owner),* }
            }
        }
    };
}

registry! {
    // The proc connector.
    KernelEvents = "kernel_events", Throughput, Netlink;
    Overruns = "overruns", Loss, Netlink;
    LostEvents = "lost_events", Loss, Netlink;
    DecodeErrors = "decode_errors", Loss, Netlink;
    // The pipeline.
    Execs = "execs", Throughput, Pipeline;
    Forks = "forks", Throughput, Pipeline;
    Exits = "exits", Throughput, Pipeline;
    Alerts = "alerts", Throughput, Pipeline;
    PartialEvents = "partial_events", Loss, Pipeline;
    ArgsTruncated = "args_truncated", Loss, Pipeline;
    Rescans = "rescans", Throughput, Pipeline;
    BlockedExecs = "blocked_execs", Throughput, Pipeline;
    /// Direct execs of a dynamic loader while a capture source runs: their
    /// argv is read from `/proc` after the fact.
    LoaderExecs = "loader_execs", Loss, Pipeline;
    TamperAlerts = "tamper_alerts", Throughput, Daemon;
    // The process table.
    TableLive = "table_live", Gauge, Table;
    TableEvictions = "table_evictions", Loss, Table;
    // Rule files left out under `unsupported_rules = "skip"`.
    RulesSkipped = "rules.skipped", Loss, Rules;
    // The exec join.
    CapturesMatched = "captures.matched", Throughput, Join;
    CapturesMismatched = "captures.mismatched", Loss, Join;
    CapturesExpired = "captures.expired", Loss, Join;
    CapturesDropped = "captures.dropped", Loss, Join;
    /// Execs without a capture from a source that records every exec
    /// (kprobe): flagged `execsentry.args_truncated`, argv from `/proc`.
    CapturesMissing = "captures.missing", Loss, Pipeline;
    // Container metadata from runtime state.
    MetadataHits = "metadata.hits", Cache, Metadata;
    MetadataLoads = "metadata.loads", Cache, Metadata;
    MetadataMisses = "metadata.misses", Loss, Metadata;
    MetadataErrors = "metadata.errors", Loss, Metadata;
    MetadataOversize = "metadata.oversize", Loss, Metadata;
    MetadataEvictions = "metadata.evictions", Cache, Metadata;
    // Executable identity.
    IdentityHits = "identity.hits", Cache, Identity;
    IdentityMisses = "identity.misses", Cache, Identity;
    IdentityParseErrors = "identity.parse_errors", Loss, Identity;
    IdentityUnreadable = "identity.unreadable", Loss, Identity;
    IdentityEvictions = "identity.evictions", Cache, Identity;
    /// Executables on FUSE or network filesystems, read by the worker.
    IdentitySlowLookups = "identity.slow_lookups", Throughput, Identity;
    /// Events sent without their identity (`execsentry.stalled`): the
    /// worker missed its deadline or was still busy with a stalled read.
    IdentityStalled = "identity.stalled", Loss, Identity;
    // fanotify exec-permission capture.
    FanotifyEvents = "fanotify.events", Throughput, Fanotify;
    FanotifyAnswered = "fanotify.answered", Throughput, Fanotify;
    FanotifyDenied = "fanotify.denied", Throughput, Fanotify;
    FanotifyWatchdogAnswers = "fanotify.watchdog_answers", Loss, Fanotify;
    /// Overdue events left to a reader thread that was runnable (starved
    /// of CPU, not stopped): up to `RUNNABLE_MAX` after their read.
    FanotifyWatchdogRunnableWaits = "fanotify.watchdog_runnable_waits", Throughput, Fanotify;
    FanotifyDeferred = "fanotify.deferred", Throughput, Fanotify;
    FanotifyArgvReadErrors = "fanotify.argv_read_errors", Loss, Fanotify;
    FanotifyRunningMisses = "fanotify.running_misses", Loss, Fanotify;
    FanotifyMarks = "fanotify.marks", Gauge, Fanotify;
    FanotifyMarkErrors = "fanotify.mark_errors", Throughput, Fanotify;
    FanotifyQueueOverflows = "fanotify.queue_overflows", Loss, Fanotify;
    FanotifyLoaderMarks = "fanotify.loader_marks", Gauge, Fanotify;
    FanotifyMemfdMarked = "fanotify.memfd_marked", Gauge, Fanotify;
    FanotifyExtraOpens = "fanotify.extra_opens", Throughput, Fanotify;
    FanotifyMalformed = "fanotify.malformed", Loss, Fanotify;
    /// FUSE and network filesystems left unmarked: reading an event of
    /// theirs would open the file, a request to their server, inside our
    /// read. Their execs are seen by the proc connector alone.
    FanotifySlowUnmarked = "fanotify.slow_unmarked", Gauge, Fanotify;
    /// argv left unread: it lay in untouched pages of a file on a FUSE or
    /// network filesystem, which our read would have asked for them.
    FanotifyArgvSlowPages = "fanotify.argv_slow_pages", Loss, Fanotify;
    /// Captures the fanotify thread could not queue for a stalled loop.
    FanotifyHandoffDropped = "fanotify.handoff_dropped", Loss, Fanotify;
    // kprobe capture (start_thread return probe, perf rings with the user
    // stack): records read, records the kernel could not write (ring
    // full), undecodable records, argv cut (flagged, completed from /proc).
    KprobeRecords = "kprobe.records", Throughput, Kprobe;
    KprobeLost = "kprobe.lost", Loss, Kprobe;
    KprobeCorrupt = "kprobe.corrupt", Loss, Kprobe;
    KprobeCut = "kprobe.cut", Loss, Kprobe;
    // Outputs.
    SyslogSent = "syslog.sent", Throughput, Syslog;
    SyslogDropped = "syslog.dropped", Loss, Syslog;
    SyslogQueued = "syslog.queued", Gauge, Syslog;
    SyslogTooBigDropped = "syslog.too_big.dropped", Loss, Syslog;
    SyslogConnects = "syslog.connects", Throughput, Syslog;
    SyslogConnected = "syslog.connected", Gauge, Syslog;
    SocketSent = "socket.sent", Throughput, Socket;
    SocketReaders = "socket.readers", Gauge, Socket;
    SocketReadersConnected = "socket.readers_connected", Throughput, Socket;
    SocketReadersDisconnected = "socket.readers_disconnected", Throughput, Socket;
    SocketSlowReaders = "socket.slow_readers", Loss, Socket;
    SocketRefusedReaders = "socket.refused_readers", Loss, Socket;
    FileSent = "file.sent", Throughput, File;
    FileErrors = "file.errors", Loss, File;
    FileReopens = "file.reopens", Throughput, File;
    StdoutSent = "stdout.sent", Throughput, Stdout;
    StdoutDropped = "stdout.dropped", Loss, Stdout;
    StdoutQueued = "stdout.queued", Gauge, Stdout;
    StdoutErrors = "stdout.errors", Loss, Stdout;
}

const N: usize = Counter::ALL.len();

impl Counter {
    /// The counter of a stable name (for readers of `status` JSON).
    pub fn from_name(name: &str) -> Option<Counter> {
        Counter::ALL.iter().copied().find(|c| c.name() == name)
    }

    pub fn is_loss(self) -> bool {
        self.kind() == Kind::Loss
    }
}

/// Values of the registry's counters. A counter that no active part of the
/// sensor reported is absent (the fanotify counters in proc mode), not 0.
#[derive(Clone, PartialEq, Eq)]
pub struct Counters {
    values: [u64; N],
    present: [bool; N],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            values: [0; N],
            present: [false; N],
        }
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(c, v)| (c.name(), v)))
            .finish()
    }
}

impl Counters {
    pub fn add(&mut self, c: Counter, n: u64) {
        let i = c as usize;
        self.values[i] = self.values[i].wrapping_add(n);
        self.present[i] = true;
    }

    pub fn inc(&mut self, c: Counter) {
        self.add(c, 1);
    }

    pub fn set(&mut self, c: Counter, v: u64) {
        self.values[c as usize] = v;
        self.present[c as usize] = true;
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize]
    }

    /// Adds every present counter of `other` (a part's own tally) to this
    /// snapshot.
    pub fn merge(&mut self, other: &Counters) {
        for (c, v) in other.iter() {
            self.add(c, v);
        }
    }

    /// The present counters, in registry order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL
            .iter()
            .copied()
            .filter(|c| self.present[*c as usize])
            .map(|c| (c, self.values[c as usize]))
    }

    /// The sum of the loss counters: it moved when something was lost.
    pub fn losses(&self) -> u64 {
        self.iter()
            .filter(|(c, _)| c.is_loss())
            .map(|(_, v)| v)
            .fold(0, u64::wrapping_add)
    }

    /// By stable name, for `status` JSON.
    pub fn to_map(&self) -> std::collections::BTreeMap<String, u64> {
        self.iter()
            .map(|(c, v)| (c.name().to_string(), v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a name is declared twice");
        for c in Counter::ALL {
            assert_eq!(Counter::from_name(c.name()), Some(*c));
        }
    }

    #[test]
    fn a_cache_miss_is_not_a_loss() {
        assert!(!Counter::IdentityMisses.is_loss());
        assert!(
            Counter::MetadataMisses.is_loss(),
            "a container without its name"
        );
        assert!(Counter::LostEvents.is_loss());
        let mut c = Counters::default();
        c.add(Counter::IdentityMisses, 5);
        assert_eq!(c.losses(), 0);
        c.inc(Counter::CapturesExpired);
        assert_eq!(c.losses(), 1);
    }

    #[test]
    fn absent_counters_are_not_reported() {
        let mut c = Counters::default();
        c.set(Counter::Execs, 0);
        let map = c.to_map();
        assert_eq!(map.len(), 1);
        assert_eq!(map["execs"], 0);
        assert!(!map.contains_key("fanotify.events"));
    }
}

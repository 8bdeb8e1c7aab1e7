#!/usr/bin/env python3
"""`make bench`: execsentry against forkstat and auditd on the same exec storm.

Every case runs in this one invocation on this machine (issue 8): the storm
alone (the physical exec rate), execsentry in proc and fanotify capture mode,
forkstat, and auditd with an execve rule. For each sensor: events received
per exec, % with the exact argv, sensor CPU per exec, exec overhead against
no sensor, exec->event latency p50/p99, peak and final RSS. Then three
consecutive storms (RSS growth), a storm with 10 000 idle processes alive and
one with twice the workers (where losses start).

Issue 19: every peer case runs in each of `--rounds` rounds (default 5), the
rounds interleaved so peers are compared in the same window; the table gives
the median with the spread (min–max) and the targets as ratios to the peers.
A separate profiled storm per capture mode breaks the sensor's CPU per exec
down by stage of the exec path (EXECSENTRY_PROFILE_STAGES=1, read from
`execsentry status`).

Writes target/bench/report.md and report.json, prints the table and ends with
the one summary line other tools parse. Python stdlib only. Exits non-zero
only when the benchmark itself cannot run (no compiler, storm fails); a sensor
that cannot start is a skipped case with a note.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "target" / "bench"
STORM = OUT / "storm"
FLOOR = OUT / "fanotify_floor"
SENSOR = REPO / "target" / "release" / "execsentry"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOKEN = re.compile(rb"storm-(\d+)-(\d+)-(\d+)")


def log(msg):
    print(f"bench: {msg}", flush=True)


# ---------------------------------------------------------------- /proc facts


def cpu_ticks(pid):
    """utime+stime of a process (fields 14 and 15 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(") ", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def status_kib(pid, key):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def kthread_pid(name):
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == name:
                    return int(d.name)
            except OSError:
                pass
    return None


# ---------------------------------------------------------------- the storm


def run_storm(workers, count, tag):
    """Runs the storm; returns its figures and the pid -> (worker, i) map."""
    pidfile = OUT / f"pids-{tag}.txt"
    out = subprocess.run(
        [str(STORM), "-w", str(workers), "-n", str(count), "-t", tag, "-p", str(pidfile)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"storm failed: {out.stderr.strip()}")
    m = dict(kv.split("=") for kv in out.stdout.split()[1:])
    pids = {}
    for line in pidfile.read_text().splitlines():
        pid, w, i = line.split()
        if pid != "0":
            pids[int(pid)] = (int(w), int(i))
    pidfile.unlink()
    return {
        "workers": int(m["workers"]),
        "execs": int(m["execs"]),
        "failed": int(m["failed"]),
        "seconds": float(m["seconds"]),
        "rate": float(m["rate"]),
    }, pids


def expected_argv(tag, token):
    w, i = TOKEN.match(token).groups()[:2]
    return [b"/bin/true", f"--es-bench={tag}".encode(), token, b"end-%s-%s" % (w, i)]


# ---------------------------------------------------------------- sensors


class Monitor:
    """A sensor process whose output (stdout pipe, or a log file that is
    followed) is read by a thread that only timestamps raw lines: parsing
    happens after the storm so the reader costs the storm as little as
    possible."""

    def __init__(self, name, cmd, follow_file=None, cpu_pids=(), env=None):
        self.name = name
        self.env = env
        self.cmd = cmd
        self.follow_file = follow_file
        self.extra_cpu_pids = list(cpu_pids)
        self.lines = []  # (arrival CLOCK_REALTIME ns, bytes)
        self.stderr_path = OUT / f"{name}.stderr"
        self.proc = None
        self._stop = threading.Event()

    def start(self, ready, timeout=15.0):
        """Starts the process; `ready(monitor)` says when it is listening.
        Returns None when ready, or the reason it is not."""
        self.err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if self.follow_file else subprocess.PIPE,
            stderr=self.err, start_new_session=True, env=self.env,
        )
        target = self._follow if self.follow_file else self._read_pipe
        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.1)
                return f"exited with {self.proc.returncode}: {self.stderr_tail()}"
            if ready(self):
                return None
            time.sleep(0.05)
        return f"not ready after {timeout:.0f} s: {self.stderr_tail()}"

    def _read_pipe(self):
        readline = self.proc.stdout.readline
        append = self.lines.append
        for line in iter(readline, b""):
            append((time.time_ns(), line))

    def _follow(self):
        # tail -F: audit.log is appended by auditd; poll every millisecond.
        path = self.follow_file
        while not self._stop.is_set() and not path.exists():
            time.sleep(0.01)
        f = open(path, "rb")
        f.seek(0, os.SEEK_END)
        pending = b""
        while not self._stop.is_set():
            chunk = f.read(1 << 20)
            if not chunk:
                # auditd rotates at max_log_file (8 MB by default, less than
                # one storm): follow the new file from its start.
                try:
                    rotated = os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
                except FileNotFoundError:
                    rotated = False
                if rotated:
                    f.close()
                    f = open(path, "rb")
                    continue
                time.sleep(0.001)
                continue
            now = time.time_ns()
            pending += chunk
            *done, pending = pending.split(b"\n")
            self.lines.extend((now, line) for line in done)
        f.close()

    def cpu(self):
        total = 0
        for pid in [self.proc.pid, *self.extra_cpu_pids]:
            t = cpu_ticks(pid)
            total += t or 0
        return total

    def rss(self):
        return status_kib(self.proc.pid, "VmRSS"), status_kib(self.proc.pid, "VmHWM")

    def drain(self, quiet=1.0, limit=20.0):
        """Waits until no line arrived for `quiet` s (the backlog is read)."""
        deadline = time.monotonic() + limit
        last = len(self.lines)
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            n = len(self.lines)
            if n != last:
                last, quiet_since = n, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet:
                return

    def stderr_tail(self, n=400):
        try:
            text = self.stderr_path.read_bytes().decode(errors="replace")
        except OSError:
            return ""
        return " ".join(text.split())[-n:]

    def stats_line(self):
        """The sensor's last `stats:` line (printed on exit): its own count
        of overruns, partial events and drops."""
        try:
            text = self.stderr_path.read_bytes().decode(errors="replace")
        except OSError:
            return None
        found = [l.strip() for l in text.splitlines() if "stats:" in l]
        return found[-1] if found else None

    def stop(self):
        self._stop.set()
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.thread.join(5)
        if hasattr(self, "err"):
            self.err.close()


# Each parser turns the raw lines into {pid: (arrival_ns, argv list of bytes
# or None when the sensor did not give it)} for exec events.


def parse_execsentry(lines):
    def get(v, dotted):
        for part in dotted.split("."):
            if not isinstance(v, dict):
                return None
            v = v.get(part)
        return v

    events = {}
    for arrival, raw in lines:
        if b'"exec"' not in raw and b"storm-" not in raw:
            continue
        try:
            v = json.loads(raw)
        except ValueError:
            continue
        if get(v, "event.kind") == "alert":
            continue
        action = get(v, "event.action")
        if action is not None and action != "exec":
            continue
        pid = get(v, "process.pid")
        if not isinstance(pid, int) or pid in events:
            continue
        args = get(v, "process.args")
        if isinstance(args, list):
            # The sensor escapes invalid UTF-8; storm argv is ASCII.
            args = [a.encode() for a in args if isinstance(a, str)]
        else:
            args = None
        events[pid] = (arrival, args)
    return events


FORKSTAT_LINE = re.compile(rb"^\S+\s+exec\s+(\d+)\s+(.*?)\s*$")


def parse_forkstat(lines):
    # "07:07:23 exec   7368                 /bin/true a b c "; forkstat joins
    # argv with spaces (storm argv has none, so splitting is exact) and
    # prints the comm in brackets or nothing when /proc was already gone.
    events = {}
    for arrival, raw in lines:
        m = FORKSTAT_LINE.match(raw)
        if not m:
            continue
        pid = int(m.group(1))
        if pid not in events:
            cmd = m.group(2)
            events[pid] = (arrival, cmd.split(b" ") if cmd else None)
    return events


AUDIT_SERIAL = re.compile(rb"msg=audit\([\d.]+:(\d+)\)")
AUDIT_ARG = re.compile(rb'a(\d+)=("[^"]*"|[0-9A-Fa-f]+)')


def parse_audit(lines):
    # A SYSCALL record carries pid=, the EXECVE record of the same serial the
    # argv (a0="..." quoted, or hex when it has special characters).
    pid_of, argv_of, arrival_of = {}, {}, {}
    for arrival, raw in lines:
        m = AUDIT_SERIAL.search(raw)
        if not m:
            continue
        serial = m.group(1)
        if raw.startswith(b"type=SYSCALL") and b"esbench" in raw:
            pm = re.search(rb" pid=(\d+)", raw)
            if pm:
                pid_of[serial] = int(pm.group(1))
                arrival_of.setdefault(serial, arrival)
        elif raw.startswith(b"type=EXECVE"):
            args = []
            for _, val in AUDIT_ARG.findall(raw.split(b"\x1d")[0]):
                args.append(val[1:-1] if val.startswith(b'"') else bytes.fromhex(val.decode()))
            argv_of[serial] = args
            arrival_of[serial] = max(arrival_of.get(serial, 0), arrival)
    return {
        pid: (arrival_of[s], argv_of.get(s))
        for s, pid in pid_of.items()
    }


def score(events, pids, tag):
    """Events attributed to the storm by pid; exact argv and latency."""
    received = exact = 0
    lat = []
    for pid, (w, i) in pids.items():
        ev = events.get(pid)
        if ev is None:
            continue
        received += 1
        arrival, argv = ev
        if not argv or len(argv) < 3:
            continue
        m = TOKEN.fullmatch(argv[2])
        if m and int(m.group(1)) == w and int(m.group(2)) == i:
            lat.append((arrival - int(m.group(3))) / 1000.0)
            if argv == expected_argv(tag, argv[2]):
                exact += 1
    lat.sort()
    n = len(pids)
    return {
        "received": received,
        "received_pct": 100.0 * received / n if n else 0.0,
        "exact_argv": exact,
        "exact_argv_pct": 100.0 * exact / n if n else 0.0,
        "latency_p50_us": lat[len(lat) // 2] if lat else None,
        "latency_p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
    }


# ---------------------------------------------------------------- cases


def storm_under(mon, parse, workers, count, tag, baseline):
    """One storm with a running monitor: all the per-sensor figures."""
    mon.lines.clear()
    cpu0 = mon.cpu()
    storm, pids = run_storm(workers, count, tag)
    mon.drain()
    cpu1 = mon.cpu()
    rss, hwm = mon.rss()
    res = {"storm": storm, **score(parse(mon.lines), pids, tag)}
    res["cpu_us_per_exec"] = (cpu1 - cpu0) * 1e6 / CLK_TCK / storm["execs"]
    res["rss_kib"], res["rss_peak_kib"] = rss, hwm
    if baseline:
        res["overhead_pct"] = 100.0 * (storm["seconds"] / baseline["seconds"] - 1.0)
    return res


def execsentry_cmd(mode, control=None):
    # The shipped rules are loaded so rule evaluation is part of the cost,
    # as in `make run`.
    cmd = [str(SENSOR), "run", "--output", "stdout", "--events", "--capture", mode,
           "--rules", str(REPO / "rules")]
    if control:
        cmd += ["--control", str(control)]
    return cmd


def ready_execsentry(mon):
    text = mon.stderr_path.read_bytes().decode(errors="replace").lower()
    return any(re.search(r"\bready\b", l) and "not ready" not in l for l in text.splitlines())


def ready_forkstat(mon):
    # The header is printed once the netlink subscription is up.
    return any(b"Event" in raw for _, raw in mon.lines[:5])


def start_execsentry(mode, cases, name, control=None, env=None):
    if not SENSOR.exists():
        cases[name] = {"skipped": "release binary not built"}
        return None
    mon = Monitor(name, execsentry_cmd(mode, control), env=env)
    why = mon.start(ready_execsentry)
    if why:
        mon.stop()
        cases[name] = {"skipped": f"sensor did not start ({why})"}
        log(f"{name}: skipped: {why}")
        return None
    return mon


def case_execsentry(mode, args, baseline, cases, storms=3):
    name = f"execsentry-{mode}"
    mon = start_execsentry(mode, cases, name)
    if not mon:
        return
    try:
        log(f"{name}: storm x{storms}")
        res = storm_under(mon, parse_execsentry, args.workers, args.count, f"{mode}1", baseline)
        rss_series = [res["rss_kib"]]
        for k in range(2, storms + 1):
            r = storm_under(mon, parse_execsentry, args.workers, args.count, f"{mode}{k}", baseline)
            rss_series.append(r["rss_kib"])
        res["rss_series_kib"] = rss_series
        res["rss_growth_kib"] = (
            rss_series[-1] - rss_series[0] if None not in rss_series else None
        )
        res["rss_peak_kib"] = mon.rss()[1]
        cases[name] = res
    finally:
        mon.stop()
    if name in cases:
        cases[name]["sensor_stats"] = mon.stats_line()


def case_floor(args, baseline, cases):
    """The permission round trip alone: a responder that only answers."""
    name = "fanotify-floor"
    if not FLOOR.exists():
        cases[name] = {"skipped": "not built"}
        return
    # Same priority as the sensor's fanotify mode (GATING_NICE).
    mon = Monitor(name, ["nice", "-n", "-10", str(FLOOR), "/"])
    why = mon.start(lambda m: any(b"ready" in raw for _, raw in m.lines))
    if why:
        mon.stop()
        cases[name] = {"skipped": why}
        return
    try:
        log("fanotify floor: storm")
        cpu0 = mon.cpu()
        storm, _ = run_storm(args.workers, args.count, "floor")
        cases[name] = {
            "storm": storm,
            "cpu_us_per_exec": (mon.cpu() - cpu0) * 1e6 / CLK_TCK / storm["execs"],
            "overhead_pct": 100.0 * (storm["seconds"] / baseline["seconds"] - 1.0),
            "rss_kib": None,
            "rss_peak_kib": None,
            "note": "bench/fanotify_floor.c: marks `/`, ignores the loader, answers FAN_ALLOW, "
                    "nothing else; nice -10. No fanotify permission sensor can cost less here",
        }
    finally:
        mon.stop()


def case_forkstat(args, baseline, cases, storms=3):
    if not shutil.which("forkstat"):
        cases["forkstat"] = {"skipped": "forkstat not installed"}
        return
    # -e exec: only exec lines (forkstat still receives every event);
    # -l: line-buffered so lines arrive when printed. Without -c or -s it
    # prints the full command line read from /proc/<pid>/cmdline.
    mon = Monitor("forkstat", ["forkstat", "-e", "exec", "-l"])
    why = mon.start(ready_forkstat)
    if why:
        mon.stop()
        cases["forkstat"] = {"skipped": why}
        return
    try:
        log(f"forkstat: storm x{storms}")
        res = storm_under(mon, parse_forkstat, args.workers, args.count, "fs1", baseline)
        series = [res["rss_kib"]]
        for k in range(2, storms + 1):
            series.append(storm_under(mon, parse_forkstat, args.workers, args.count, f"fs{k}", baseline)["rss_kib"])
        res["rss_series_kib"] = series
        res["rss_growth_kib"] = series[-1] - series[0] if None not in series else None
        res["rss_peak_kib"] = mon.rss()[1]
        cases["forkstat"] = res
    finally:
        mon.stop()


def audit_usable():
    if not shutil.which("auditd") or not shutil.which("auditctl"):
        return "auditd not installed (apt-get install auditd)"
    s = subprocess.run(["auditctl", "-s"], capture_output=True, text=True)
    if s.returncode != 0:
        return f"kernel audit unavailable: {s.stderr.strip() or s.stdout.strip()}"
    if re.search(r"^pid [1-9]", s.stdout, re.M):
        return "another audit daemon is already running; not touching it"
    if re.search(r"^enabled 2", s.stdout, re.M):
        return "audit configuration is locked (enabled 2)"
    return None


def case_auditd(args, baseline, cases):
    why = audit_usable()
    if why:
        cases["auditd"] = {"skipped": why}
        log(f"auditd: skipped: {why}")
        return
    status = subprocess.run(["auditctl", "-s"], capture_output=True, text=True).stdout
    old = dict(
        l.split(" ", 1) for l in status.splitlines() if l.startswith(("enabled ", "backlog_limit "))
    )
    log_file = Path("/var/log/audit/audit.log")
    rule = ["-a", "always,exit", "-F", "arch=b64", "-S", "execve", "-k", "esbench"]
    kauditd = kthread_pid("kauditd")
    # auditd -n: stay in the foreground, so we own and can stop it. Its
    # own CPU plus kauditd's is the sensor cost; the in-syscall audit cost
    # lands in the exec'ing processes and shows as exec overhead.
    mon = Monitor("auditd", ["auditd", "-n"], follow_file=log_file,
                  cpu_pids=[kauditd] if kauditd else [])
    try:
        # A backlog like the shipped rules' -b 8192, so the comparison is not
        # about auditd's tiny default queue.
        subprocess.run(["auditctl", "-b", "8192"], capture_output=True, check=False)
        why = mon.start(lambda m: re.search(
            r"^pid [1-9]", subprocess.run(["auditctl", "-s"], capture_output=True, text=True).stdout, re.M
        ) is not None)
        if why:
            cases["auditd"] = {"skipped": f"auditd did not start: {why}"}
            return
        r = subprocess.run(["auditctl", *rule], capture_output=True, text=True)
        if r.returncode != 0:
            cases["auditd"] = {"skipped": f"auditctl rejected the execve rule: {r.stderr.strip()}"}
            return
        time.sleep(0.5)
        log("auditd: storm")
        res = storm_under(mon, parse_audit, args.workers, args.count, "au1", baseline)
        res["note"] = "CPU = auditd + kauditd; audit's in-kernel cost shows as exec overhead"
        cases["auditd"] = res
    finally:
        subprocess.run(["auditctl", "-d", *rule[1:]], capture_output=True)
        mon.stop()
        for key in ("enabled", "backlog_limit"):
            if key in old:
                flag = "-e" if key == "enabled" else "-b"
                subprocess.run(["auditctl", flag, old[key].strip()], capture_output=True)


def spawn_idle(n):
    """n idle `sleep` processes in one new process group (one kill ends all)."""
    pids = []
    pgid = 0
    for _ in range(n):
        try:
            pid = os.posix_spawn("/bin/sleep", ["sleep", "3600"], os.environ,
                                 setpgroup=pgid)
        except OSError as e:
            log(f"idle: stopped at {len(pids)} processes: {e}")
            break
        if not pgid:
            pgid = pid
        pids.append(pid)
    return pgid, pids


def kill_idle(pgid, pids):
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def case_scale(mode, args, baseline, cases):
    """Per-exec cost with 10 000 idle processes alive, and losses with twice
    the workers (losses are what the sensor did not deliver)."""
    if not mode:
        cases["idle-10k"] = cases["2x-workers"] = {"skipped": "no execsentry mode runs"}
        return
    # Each scale case gets its own no-sensor storm under the same
    # conditions: 10 000 extra processes slow fork/exit by themselves.
    pgid, pids = spawn_idle(args.idle)
    try:
        log(f"idle: {len(pids)} sleep processes alive")
        idle_base, _ = run_storm(args.workers, args.count, "idlebase")
        mon = start_execsentry(mode, cases, "idle-10k")
        if mon:
            try:
                res = storm_under(mon, parse_execsentry, args.workers, args.count, "idle", idle_base)
                res["idle_processes"] = len(pids)
                res["baseline"] = idle_base
                res["note"] = (f"{len(pids)} idle processes; overhead vs. a no-sensor storm with them "
                               f"({idle_base['rate']:.0f} execs/s)")
                cases["idle-10k"] = res
            finally:
                mon.stop()
    finally:
        kill_idle(pgid, pids)
    double_base, _ = run_storm(2 * args.workers, args.count, "doublebase")
    mon = start_execsentry(mode, cases, "2x-workers")
    if mon:
        try:
            log(f"2x workers: {2 * args.workers}")
            res = storm_under(mon, parse_execsentry, 2 * args.workers, args.count, "double", double_base)
            res["baseline"] = double_base
            res["lost"] = res["storm"]["execs"] - res["received"]
            cases["2x-workers"] = res
        finally:
            mon.stop()
        if "2x-workers" in cases:
            cases["2x-workers"]["sensor_stats"] = mon.stats_line()


def status_of(control):
    out = subprocess.run([str(SENSOR), "status", "--json", "--socket", str(control)],
                         capture_output=True, text=True, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def case_stages(mode, args, baseline, stages):
    """One profiled storm: the loop thread's CPU per exec by stage."""
    control = OUT / f"control-{mode}.sock"
    env = dict(os.environ, EXECSENTRY_PROFILE_STAGES="1")
    scratch = {}
    mon = start_execsentry(mode, scratch, f"stages-{mode}", control=control, env=env)
    if not mon:
        stages[mode] = scratch
        return
    try:
        log(f"stages-{mode}: profiled storm")
        before = status_of(control)
        cpu0 = mon.cpu()
        storm, _ = run_storm(args.workers, args.count, f"st{mode}")
        mon.drain()
        cpu_us = (mon.cpu() - cpu0) * 1e6 / CLK_TCK / storm["execs"]
        after = status_of(control)
        if not before or not after or not after.get("stages_ns"):
            stages[mode] = {"skipped": "no stage figures in status"}
            return
        order = ("kernel_read", "capture", "proc", "identity", "metadata", "rules", "format", "output")
        got = after["stages_ns"]
        per = {k: (got[k] - before["stages_ns"].get(k, 0)) / 1000.0 / storm["execs"]
               for k in sorted(got, key=lambda k: order.index(k) if k in order else len(order))}
        stages[mode] = {"per_exec_us": per, "sum_us": sum(per.values()), "cpu_us_per_exec": cpu_us}
    finally:
        mon.stop()


METRICS = ("overhead_pct", "exact_argv_pct", "received_pct", "cpu_us_per_exec",
           "latency_p50_us", "latency_p99_us", "rss_kib", "rss_peak_kib")


def aggregate(rounds):
    """Per case: the median of each figure over the rounds and its spread."""
    names = []
    for r in rounds:
        names += [n for n in r if n not in names]
    cases = {}
    for name in names:
        got = [r[name] for r in rounds if name in r and "skipped" not in r[name]]
        if not got:
            cases[name] = next(r[name] for r in rounds if name in r)
            continue
        res = dict(got[0])
        res["rounds"] = len(got)
        res["storm"] = dict(got[0]["storm"])
        res["storm"]["rate"] = statistics.median(g["storm"]["rate"] for g in got)
        for key in METRICS:
            vals = [g[key] for g in got if g.get(key) is not None]
            if vals:
                res[key] = statistics.median(vals)
                res[key + "_spread"] = (min(vals), max(vals))
        peaks = [g["rss_peak_kib"] for g in got if g.get("rss_peak_kib") is not None]
        if peaks:
            res["rss_peak_kib"] = max(peaks)
        cases[name] = res
    return cases


def targets(cases):
    """Issue 19's targets, each a ratio to a peer of the same run."""
    def ok(name):
        return cases.get(name) if name in cases and "skipped" not in cases[name] else None
    fan, proc, fs, au = (ok(n) for n in ("execsentry-fanotify", "execsentry-proc", "forkstat", "auditd"))
    rows = ["| target | measured | met |", "|---|---|---|"]

    def row(what, have, met):
        rows.append(f"| {what} | {have} | {'yes' if met else 'no'} |")

    if fan and au:
        row("fanotify overhead ≤ ½ auditd's",
            f"{fan['overhead_pct']:.1f}% vs ½ × {au['overhead_pct']:.1f}%",
            fan["overhead_pct"] <= au["overhead_pct"] / 2)
        row("fanotify exact argv ≥ 99.9%", f"{fan['exact_argv_pct']:.2f}%", fan["exact_argv_pct"] >= 99.9)
    if proc and fs:
        row("proc overhead ≤ forkstat's", f"{proc['overhead_pct']:.1f}% vs {fs['overhead_pct']:.1f}%",
            proc["overhead_pct"] <= fs["overhead_pct"])
        row("proc exact argv ≥ forkstat's", f"{proc['exact_argv_pct']:.2f}% vs {fs['exact_argv_pct']:.2f}%",
            proc["exact_argv_pct"] >= fs["exact_argv_pct"])
        row("proc CPU/exec ≤ forkstat's", f"{proc['cpu_us_per_exec']:.1f} vs {fs['cpu_us_per_exec']:.1f} µs",
            proc["cpu_us_per_exec"] <= fs["cpu_us_per_exec"])
    for r, name in ((fan, "fanotify"), (proc, "proc")):
        if r and r.get("rss_peak_kib"):
            row(f"{name} RSS peak ≤ 16 MiB", f"{r['rss_peak_kib'] / 1024:.1f} MiB",
                r["rss_peak_kib"] <= 16 * 1024)
    return rows


def stage_table(stages):
    rows = []
    for mode, st in stages.items():
        if "skipped" in st:
            rows.append(f"- stages-{mode}: skipped: {st['skipped']}")
            continue
        parts = " | ".join(f"{v:.1f}" for v in st["per_exec_us"].values())
        if not rows or not rows[0].startswith("| mode"):
            rows[:0] = ["| mode | " + " | ".join(st["per_exec_us"]) + " | sum (loop thread) | process CPU |",
                        "|---" * (len(st["per_exec_us"]) + 3) + "|"]
        rows.append(f"| {mode} | {parts} | {st['sum_us']:.1f} | {st['cpu_us_per_exec']:.1f} |")
    return rows


# ---------------------------------------------------------------- report


def fmt(v, spec=".1f", unit=""):
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def table(baseline, cases):
    rows = [
        "| case | execs/s | overhead | events | exact argv | CPU/exec | latency p50 / p99 | RSS final / peak | RSS growth (3 storms) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| no sensor | {baseline['rate']:.0f} | – | – | – | – | – | – | – |",
    ]
    notes = []
    for name, r in cases.items():
        if "skipped" in r:
            rows.append(f"| {name} | skipped | | | | | | | |")
            notes.append(f"- {name}: skipped: {r['skipped']}")
            continue
        def spread(key, spec, unit=""):
            v = fmt(r.get(key), spec, unit)
            lo_hi = r.get(key + "_spread")
            if lo_hi and r.get("rounds", 1) > 1:
                v += f" ({lo_hi[0]:{spec}}–{lo_hi[1]:{spec}})"
            return v
        rows.append(
            f"| {name} | {r['storm']['rate']:.0f} | {spread('overhead_pct', '.1f', '%')} "
            f"| {fmt(r.get('received_pct'), '.2f', '%')} | {spread('exact_argv_pct', '.2f', '%')} "
            f"| {spread('cpu_us_per_exec', '.1f', ' µs')} "
            f"| {fmt(r.get('latency_p50_us'), '.0f')} / {fmt(r.get('latency_p99_us'), '.0f')} µs "
            f"| {fmt(r.get('rss_kib'), '.0f')} / {fmt(r.get('rss_peak_kib'), '.0f')} KiB "
            f"| {fmt(r.get('rss_growth_kib'), 'd', ' KiB')} |"
        )
        if "lost" in r:
            notes.append(f"- {name}: {r['lost']} of {r['storm']['execs']} execs without an event "
                         f"({r['storm']['workers']} workers)")
        if "note" in r:
            notes.append(f"- {name}: {r['note']}")
        if r.get("sensor_stats"):
            notes.append(f"- {name}: sensor's own counters at exit: `{r['sensor_stats']}`")
            wait = re.search(r"answer_us_p50=([\d.]+) fanotify.answer_us_p99=([\d.]+)", r["sensor_stats"])
            if wait:
                notes.append(f"- {name}: permission event read → answer: "
                             f"p50 {wait.group(1)} µs, p99 {wait.group(2)} µs")
    return rows, notes


def summary(cases):
    def part(name, r, with_overhead):
        if not r or "skipped" in r:
            return f"{name}: n/a"
        s = f"{name}: {r['exact_argv_pct']:.2f}% argv complete, {r['cpu_us_per_exec']:.1f} µs CPU/exec"
        if with_overhead:
            s += f", {r.get('overhead_pct', 0.0):.1f}% exec overhead"
        return s

    # The best available capture mode: most exact argv, then least CPU.
    modes = [cases[k] for k in ("execsentry-fanotify", "execsentry-proc")
             if k in cases and "skipped" not in cases[k]]
    best = max(modes, key=lambda r: (r["exact_argv_pct"], -r["cpu_us_per_exec"]), default=None)
    return f"{part('execsentry', best, True)} | {part('forkstat', cases.get('forkstat'), False)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10000, help="execs per storm")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--idle", type=int, default=10000, help="idle processes for the scale run")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of every peer case (median, spread)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--only", default="", help="comma list of cases: proc,fanotify,forkstat,auditd,scale,micro")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    want = lambda c: not only or c in only  # noqa: E731

    if os.geteuid() != 0:
        print("bench: needs root (proc connector, audit, fanotify)", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        print("bench: no C compiler (apt-get install gcc)", file=sys.stderr)
        return 2
    subprocess.run([cc, "-O2", "-Wall", "-o", str(STORM), str(REPO / "bench" / "storm.c")], check=True)
    subprocess.run([cc, "-O2", "-Wall", "-o", str(FLOOR), str(REPO / "bench" / "fanotify_floor.c")], check=True)
    notes = []
    if not args.no_build:
        log("cargo build --release")
        if subprocess.run(["cargo", "build", "--release", "--bin", "execsentry"], cwd=REPO).returncode != 0:
            notes.append("- cargo build --release failed: execsentry cases skipped")
            if SENSOR.exists():
                SENSOR.unlink()

    runs, per_round = [], []
    for k in range(max(1, args.rounds)):
        # Each round: a no-sensor storm, then every peer against it, so the
        # figures of one round share the machine's state of the moment.
        log(f"round {k + 1}/{args.rounds}: no sensor: {args.count} execs, {args.workers} workers")
        base = run_storm(args.workers, args.count, f"base{k}")[0]
        runs.append(base)
        rc = {}
        storms = 3 if k == 0 else 1  # RSS over three storms, once
        for mode in ("proc", "fanotify"):
            if want(mode):
                case_execsentry(mode, args, base, rc, storms)
        if want("fanotify"):
            case_floor(args, base, rc)
        if want("forkstat"):
            case_forkstat(args, base, rc, storms)
        if want("auditd"):
            case_auditd(args, base, rc)
        per_round.append(rc)
    cases = aggregate(per_round)
    baseline = dict(runs[0])
    baseline["rate"] = statistics.median(r["rate"] for r in runs)
    baseline["seconds"] = statistics.median(r["seconds"] for r in runs)

    stages = {}
    for mode in ("proc", "fanotify"):
        if want(mode) and want("stages"):
            case_stages(mode, args, baseline, stages)
    if want("scale"):
        ok = [m for m in ("fanotify", "proc") if f"execsentry-{m}" in cases and "skipped" not in cases[f"execsentry-{m}"]]
        case_scale(ok[0] if ok else None, args, baseline, cases)

    micro = []
    if want("micro"):
        log("cargo bench --bench hot_path (pure hot-path pieces)")
        r = subprocess.run(["cargo", "bench", "--bench", "hot_path"], cwd=REPO,
                           capture_output=True, text=True)
        if r.returncode == 0:
            micro = ["## Micro-benchmarks (thread CPU per operation)", "", "```",
                     *r.stdout.strip().splitlines(), "```", ""]
        else:
            notes.append("- micro-benchmarks failed to run: " + r.stderr.strip()[-300:])

    rows, case_notes = table(baseline, cases)
    target_rows = targets(cases)
    stage_rows = stage_table(stages)
    line = summary(cases)
    machine = f"{platform.node()}: {os.cpu_count()} cores, Linux {platform.release()}"
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    md = [
        f"# execsentry benchmark — {when}",
        "",
        f"Machine: {machine}. Storm: {args.count} × fork+exec `/bin/true`, {args.workers} workers; "
        f"{len(runs)} rounds, medians with (min–max); no-sensor baseline "
        f"{baseline['rate']:.0f} execs/s (median; {min(r['rate'] for r in runs):.0f}–"
        f"{max(r['rate'] for r in runs):.0f}).",
        "",
        *rows,
        "",
        "Targets (issue 19), on the medians:",
        "",
        *target_rows,
        "",
        "Sensor CPU per exec by stage (µs, one profiled storm per mode; the loop thread's laps "
        "add up to its CPU time, the process CPU also counts the fanotify watchdog):",
        "",
        *stage_rows,
        "",
        "events / exact argv: % of the storm's execs with an exec event / with the exact argv. "
        "CPU: the sensor's utime+stime per exec. Overhead: storm wall time vs. no sensor. "
        "Latency: event arrival at the reader minus CLOCK_REALTIME taken just before execve.",
        "",
        *notes, *case_notes,
        "",
        *micro,
        line,
        "",
    ]
    (OUT / "report.md").write_text("\n".join(md))
    (OUT / "report.json").write_text(json.dumps(
        {"date": when, "machine": machine, "count": args.count, "workers": args.workers,
         "baseline_runs": runs, "baseline": baseline, "cases": cases, "rounds": per_round,
         "stages": stages, "summary": line},
        indent=2, default=str))
    print()
    print("\n".join(md[4:-3]))
    print(f"report: {OUT / 'report.md'}, raw figures: {OUT / 'report.json'}")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

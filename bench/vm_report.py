#!/usr/bin/env python3
"""The VM part of `make bench`: a Markdown table from bench/vm-guest.sh's
VMBENCH lines (bench/vm.sh passes the file and the kernel's name).

Overhead is relative to the storm with no sensor in the same boot:
rate(no sensor) / rate(mode) - 1, i.e. how much longer an exec took. With
several rounds the modes were interleaved; rates are summed over rounds
(total execs / total seconds), exact argv likewise.
"""

import re
import sys
from collections import OrderedDict

ORDER = ["none", "proc", "kprobe", "fanotify"]
LABEL = {
    "none": "no sensor",
    "proc": "execsentry `--capture proc`",
    "kprobe": "execsentry `--capture kprobe`",
    "fanotify": "execsentry `--capture fanotify`",
}
# Counters shown per mode: what each mode loses argv to, and what it
# waited for instead (deferred tasks, a reader left its overdue events).
# Losses every sensor mode reports: proc-connector messages the socket
# could not hold, and sequence gaps.
COMMON = ["overruns", "lost_events"]
LOSSES = {
    "kprobe": ["kprobe.lost", "kprobe.cut", "captures.missing", "captures.mismatched"],
    "fanotify": [
        "fanotify.watchdog_answers",
        "fanotify.running_misses",
        "fanotify.deferred",
        "fanotify.watchdog_runnable_waits",
    ],
}


def parse(path):
    info, rows = "", []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("VMINFO kernel"):
                info = line[len("VMINFO ") :]
            if not line.startswith("VMBENCH "):
                continue
            fields = dict(re.findall(r"([a-z_.]+)[=:]([0-9.]+|[a-z]+)", line))
            fields["raw"] = line
            rows.append(fields)
    return info, rows


def main():
    path, kernel = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "?")
    info, rows = parse(path)
    modes = OrderedDict()
    failed = []
    for r in rows:
        mode = r.get("mode", "?")
        if "FAIL" in r["raw"] or "seconds" not in r:
            failed.append(r["raw"])
            continue
        m = modes.setdefault(
            mode,
            {"execs": 0, "seconds": 0.0, "exact": 0, "events": 0, "rounds": 0, "c": {}},
        )
        m["execs"] += int(r["execs"])
        m["seconds"] += float(r["seconds"])
        m["exact"] += int(r.get("exact", 0))
        m["events"] += int(r.get("events", 0))
        m["rounds"] += 1
        for name in (COMMON if mode != "none" else []) + LOSSES.get(mode, []):
            m["c"][name] = m["c"].get(name, 0) + int(r.get(name, 0))
    base = modes.get("none")
    base_rate = base["execs"] / base["seconds"] if base and base["seconds"] else None
    out = [
        f"### Debian {kernel} under qemu TCG (2 vCPUs): TCG figures, not native speed",
        "",
        f"{info}. One boot, each mode's storm of `/bin/true` execs with unique arguments "
        "(bench/storm.c, 2 workers); overhead is relative to the storm with no sensor "
        "in the same boot. Under TCG every instruction is emulated (~30x slower than "
        "native, and the host's own load shows), so only the ratios mean something.",
        "",
        "| setup | execs/s | overhead | events | exact argv | counters |",
        "|---|---|---|---|---|---|",
    ]
    for mode in ORDER + [m for m in modes if m not in ORDER]:
        m = modes.get(mode)
        if not m:
            continue
        rate = m["execs"] / m["seconds"] if m["seconds"] else 0.0
        over = "–"
        if mode != "none" and base_rate and rate:
            over = f"{100 * (base_rate / rate - 1):.0f} %"
        exact = events = "–"
        if mode != "none":
            events = f"{m['events']}/{m['execs']}"
            exact = f"{m['exact']}/{m['execs']} ({100 * m['exact'] / m['execs']:.2f} %)"
        losses = ", ".join(f"`{k}` {v}" for k, v in m["c"].items()) or "–"
        out.append(
            f"| {LABEL.get(mode, mode)} | {rate:.0f} | {over} | {events} | {exact} | {losses} |"
        )
    if failed:
        out += ["", "Failed:", ""] + [f"- `{f}`" for f in failed]
    print("\n".join(out))
    return 1 if failed or not modes else 0


if __name__ == "__main__":
    sys.exit(main())

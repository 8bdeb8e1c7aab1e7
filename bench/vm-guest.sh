#!/bin/sh
# The VM part of `make bench`, run as /init inside the VM (busybox sh):
# one exec storm per mode (no sensor, then each capture mode of
# `execsentry run`), all in this one boot so the overheads compare like
# with like. Prints `VMBENCH mode=... execs=... seconds=... rate=...
# events=... exact=... counters...` per mode and `VMDONE`, then powers
# off. Kernel command line: es_storm=N (execs per storm), es_modes="none
# proc kprobe fanotify", es_rounds=R (the modes are run R times,
# interleaved, so a slow stretch of the host does not land on one mode).
# bench/vm.sh boots it; tests/vm/exact.sh holds what it shares with the
# kernel matrix's guest.

export PATH=/bin:/usr/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
STORM=2000
MODES="none proc kprobe fanotify"
ROUNDS=1
ES_DEBUG=
for a in $(cat /proc/cmdline); do
	case "$a" in
	es_storm=*) STORM="${a#es_storm=}" ;;
	es_modes=*) MODES="$(echo "${a#es_modes=}" | tr , ' ')" ;;
	es_rounds=*) ROUNDS="${a#es_rounds=}" ;;
	es_debug=*) ES_DEBUG=1 ;;
	es_profile=*) export EXECSENTRY_PROFILE_STAGES=1 ;;
	es_env=*) export "${a#es_env=}" ;;
	esac
done
. /usr/share/execsentry/exact.sh
echo "VMINFO kernel $(uname -r) cpus $(grep -c ^processor /proc/cpuinfo) storm $STORM modes $MODES rounds $ROUNDS"

# A short warm-up: the first storm after boot pays for cold caches.
/bin/storm -w 2 -n 200 -t warm >/dev/null 2>&1

r=1
while [ "$r" -le "$ROUNDS" ]; do
	for mode in $MODES; do
		tag="b$mode$r"
		if [ "$mode" != none ]; then
			: >/tmp/bench.err
			/bin/execsentry run --output stdout --events --capture "$mode" \
				--control /tmp/bench.sock >/tmp/bench.jsonl 2>>/tmp/bench.err &
			pid=$!
			if ! wait_ready "$pid" /tmp/bench.err; then
				echo "VMBENCH mode=$mode round=$r FAIL did not start: $(tail -n 2 /tmp/bench.err)"
				continue
			fi
		fi
		out=$(/bin/storm -w 2 -n "$STORM" -t "$tag" -p /tmp/bench.pids 2>&1)
		line="VMBENCH mode=$mode round=$r $(echo "$out" | sed 's/^storm: //')"
		if [ "$mode" != none ]; then
			settle /tmp/bench.sock
			st=$(/bin/execsentry status --json --socket /tmp/bench.sock 2>&1)
			if [ -n "$ES_DEBUG" ]; then
				echo "VMINFO status $(echo "$st" | tr -d " \n")"
				grep execsentry_ /sys/kernel/tracing/kprobe_profile 2>/dev/null | sed 's/^/VMINFO profile /'
				grep -c 'join: ' /tmp/bench.err | sed 's/^/VMINFO join lines /'
				grep 'join: ' /tmp/bench.err | head -n 40 | sed 's/^/VMINFO /'
			fi
			kill -TERM "$pid"
			wait "$pid" 2>/dev/null
			src=""
			[ "$mode" = proc ] || src="$mode"
			set -- $(exact_events /tmp/bench.jsonl "$tag" "$src" /tmp/bench.pids)
			counters=$(echo "$st" | tr -d ' \n' | tr ',{}' '\n\n\n' | grep -E '"((fanotify|kprobe|proc|join|captures?|stdout)\.[a-z_.]*|overruns|lost_events)":[0-9]' | tr -d '"' | tr '\n' ' ')
			line="$line events=$2 exact=$1 $counters"
		fi
		echo "$line"
	done
	r=$((r + 1))
done
echo VMDONE
poweroff -f

# shellcheck shell=sh
# What the two VM guests share: starting and settling a sensor, and
# counting the exact argv of a storm (bench/storm.c) in `execsentry run
# --events` output; sourced by tests/vm/guest.sh and bench/vm-guest.sh
# inside the VM (busybox sh and awk).
#
# exact_events FILE TAG SOURCE PIDFILE: prints "exact seen": storm execs
# whose process.args are exact (and from SOURCE, if set), and storm pids
# that got an exec event at all.
exact_events() {
	awk -v tag="\"--es-bench=$2\"" -v src="$3" '
		FNR == NR { want[$1] = 1; next }
		{
			i = index($0, "\"process\":{\"pid\":")
			if (i == 0) next
			p = substr($0, i + 17); sub(/[^0-9].*/, "", p)
			if (!(p in want)) next
			if (!(p in got)) { got[p] = 1; seen++ }
			if (src != "" && index($0, "\"args_source\":\"" src "\"") == 0) next
			j = index($0, "\"args\":[")
			s = substr($0, j + 8); sub(/\].*/, "", s)
			n = split(s, a, ",")
			if (n != 4 || a[1] != "\"/bin/true\"" || a[2] != tag) next
			split(a[3], t, "-"); split(a[4], e, "-")
			if (t[2] "-" t[3] "\"" != e[2] "-" e[3]) next
			if (!(p in ok)) { ok[p] = 1; exact++ }
		}
		END { printf "%d %d\n", exact, seen }' "$4" "$1"
}

# status_counter JSON NAME: one counter of `execsentry status --json`
# output (pretty-printed JSON), or empty.
status_counter() {
	echo "$1" | tr -d ' \n' | tr ',{}' '\n\n\n' | sed -n "s/^\"$2\":\([0-9]*\)$/\1/p"
}

# wait_ready PID ERRFILE: returns 0 once the sensor's log ERRFILE says
# `ready`, 1 if PID died first or 30 s passed. Empty ERRFILE before the
# sensor starts and let it append (`: >F`, then `2>>F`): a `2>F` of the
# background child truncates when the child gets to it, and a first look
# before that finds the last sensor's `ready` (the storm then started
# before this sensor watched anything).
wait_ready() {
	i=0
	while ! grep -q 'ready' "$2" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 300 ] || ! kill -0 "$1" 2>/dev/null; then
			return 1
		fi
		sleep 0.1
	done
}

# settle SOCKET: waits (at most 20 s) until the sensor has caught up with
# a storm that just ended: the execs it read and the lines it wrote both
# unchanged over a second. Under TCG a sensor can be seconds behind, and
# what it had not handled when it is stopped would count as missing.
settle() {
	prev=-1
	same=0
	i=0
	while [ $i -lt 40 ]; do
		st=$(/bin/execsentry status --json --socket "$1" 2>/dev/null)
		cur="$(status_counter "$st" execs)/$(status_counter "$st" stdout.sent)"
		if [ "$cur" = "$prev" ]; then
			same=$((same + 1))
			[ $same -ge 2 ] && return 0
		else
			same=0
		fi
		prev="$cur"
		i=$((i + 1))
		sleep 0.5
	done
}

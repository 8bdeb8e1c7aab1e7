#!/bin/sh
# The kernel-matrix test, run as /init inside the VM (busybox sh). Prints
# `VMRESULT <name> PASS|FAIL <detail>` lines on the serial console and
# `VMDONE` at the end, then powers off. tests/vm_matrix.rs reads them.
# STORM (execs of the exactness storm) comes from the kernel command line.

export PATH=/bin:/usr/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
# tracefs is left unmounted: the sensor mounts it itself.
STORM="${STORM:-5000}"
# The debug path's storm; the daemon's kprobe storm is STORM execs.
DSTORM=2000
for a in $(cat /proc/cmdline); do
	case "$a" in es_storm=*) STORM="${a#es_storm=}" ;; esac
done
T0=$(cut -d' ' -f1 /proc/uptime)
echo "VMINFO kernel $(uname -r) cpus $(grep -c ^processor /proc/cpuinfo) storm $STORM"

. /usr/share/execsentry/exact.sh
result() { echo "VMRESULT $1 $2 $3"; }
TR=/sys/kernel/tracing

# start_sensor NAME [args]: a debug capture in the background, its
# captures in /tmp/NAME.jsonl; waits for `ready`.
start_sensor() {
	name="$1"
	shift
	: >"/tmp/$name.err"
	EXECSENTRY_LOG=debug /bin/execsentry debug capture --source kprobe "$@" >"/tmp/$name.jsonl" 2>>"/tmp/$name.err" &
	eval "PID_$name=$!"
	if ! wait_ready "$(eval echo \$PID_$name)" "/tmp/$name.err"; then
		echo "VMLOG $name did not start: $(cat /tmp/$name.err)"
		return 1
	fi
}

stop_sensor() {
	pid="$(eval echo \$PID_$1)"
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

counter() { # FILE NAME
	tail -n 1 "$1" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}

# The argv of the capture whose first argument is MARK, hex, and its flag.
capture_of() { # FILE MARK -> "hex truncated"
	grep -F "\"$2\"" "$1" | head -n 1 |
		sed -n 's/.*"argv_hex":"\([0-9a-f]*\)".*"truncated":\([a-z]*\).*/\1 \2/p'
}

hexof() { # ARG... -> hex of "arg\0arg\0..."
	for a in "$@"; do printf '%s\0' "$a"; done | od -An -v -tx1 | tr -d ' \n'
}

# A baseline rate without any sensor, for the overhead figure.
/bin/storm -w 2 -n 1000 -t base >/tmp/base.out 2>&1
echo "VMLOG baseline $(cat /tmp/base.out)"

# ---- 1. start (mounts tracefs) and exactness under a storm ----
if start_sensor main; then
	result start PASS "$(head -n 1 /tmp/main.err)"
else
	result start FAIL "$(cat /tmp/main.err)"
	echo VMDONE
	poweroff -f
fi
[ -e $TR/kprobe_events ] && result tracefs_mounted PASS "$TR" || result tracefs_mounted FAIL "no $TR/kprobe_events"

S0=$(cut -d' ' -f1 /proc/uptime)
/bin/storm -w 2 -n "$DSTORM" -t vm -p /tmp/pids >/tmp/storm.out 2>&1
S1=$(cut -d' ' -f1 /proc/uptime)
echo "VMLOG storm $(cat /tmp/storm.out) ($S0..$S1)"

# ---- 2. boundary sizes, many args, hostile bytes, script, static ----
for n in 2047 2049 4095 4097 8193 100000; do
	arg=$(head -c "$n" /dev/zero | tr '\0' a)
	/bin/true "mark-size-$n" "$arg"
done
for n in 129 300; do
	set --
	i=1
	while [ $i -le $n ]; do set -- "$@" "x$i"; i=$((i + 1)); done
	/bin/true "mark-args-$n" "$@"
done
HOSTILE="$(printf 'a\nb\001c\377d"e\\f\tg')"
/bin/true mark-hostile "$HOSTILE" ""
printf '#!/bin/sh\n:\n' >/tmp/s.sh
chmod +x /tmp/s.sh
/tmp/s.sh mark-script y
/bin/storm -n 0 -t mark-static >/dev/null 2>&1
sleep 0.3
echo "VMLOG kprobe_profile $(grep execsentry_ $TR/kprobe_profile | tr -s ' ')"
stop_sensor main
echo "VMLOG counters $(tail -n 1 /tmp/main.jsonl)"
grep 'argv cut' /tmp/main.err | head -n 5 | sed 's/^/VMLOG /'
grep '"truncated":true' /tmp/main.jsonl | head -n 3 | cut -c1-300 | sed 's/^/VMLOG /'

F=/tmp/main.jsonl
exact=$(awk '
	index($0, "\"--es-bench=vm\"") {
		total++
		if ($0 !~ /"truncated":false/) next
		s = $0; sub(/.*"argv":\[/, "", s); sub(/\].*/, "", s)
		n = split(s, a, ",")
		if (n != 4 || a[1] != "\"/bin/true\"" || a[2] != "\"--es-bench=vm\"") next
		split(a[3], t, "-"); split(a[4], e, "-")
		if (t[1] != "\"storm" || e[1] != "\"end") next
		if (t[2] "-" t[3] "\"" != e[2] "-" e[3]) next
		key = t[2] "-" t[3]
		if (!(key in seen)) { seen[key] = 1; ok++ }
	}
	END { printf "%d %d\n", ok, total }' "$F")
ok=${exact% *}
pct=$(awk -v o="$ok" -v w="$DSTORM" 'BEGIN { printf "%.2f", 100 * o / w }')
if [ "$ok" -ge $((DSTORM * 999 / 1000)) ]; then
	result storm_exact PASS "$ok/$DSTORM ($pct%) lost=$(counter $F kprobe.lost) cut=$(counter $F kprobe.cut)"
else
	result storm_exact FAIL "$ok/$DSTORM ($pct%) lines=${exact#* } lost=$(counter $F kprobe.lost) cut=$(counter $F kprobe.cut)"
fi
secs=$(awk -v a="$S0" -v b="$S1" 'BEGIN { printf "%.2f", b - a }')
echo "VMLOG storm_seconds $secs"

for n in 2047 2049 4095 4097 8193 100000; do
	arg=$(head -c "$n" /dev/zero | tr '\0' a)
	got=$(capture_of $F "mark-size-$n")
	want=$(hexof /bin/true "mark-size-$n" "$arg")
	case "$got" in
	"$want false") result "size_$n" PASS exact ;;
	*" true")
		# Flagged: what came (its last argument NUL-ended where it was
		# cut) must be a prefix of the real argv.
		g=${got% *}
		g=${g%00}
		case "$want" in "$g"*) result "size_$n" PASS "flagged truncated at $((${#g} / 2)) bytes" ;; *) result "size_$n" FAIL "flagged but not a prefix" ;; esac
		;;
	"") result "size_$n" FAIL "no capture" ;;
	*) result "size_$n" FAIL "silently short or wrong: ${#got} hex chars" ;;
	esac
done
for n in 129 300; do
	set --
	i=1
	while [ $i -le $n ]; do set -- "$@" "x$i"; i=$((i + 1)); done
	got=$(capture_of $F "mark-args-$n")
	want=$(hexof /bin/true "mark-args-$n" "$@")
	case "$got" in
	"$want false") result "args_$n" PASS exact ;;
	*" true") result "args_$n" PASS flagged ;;
	*) result "args_$n" FAIL "got ${#got} hex chars" ;;
	esac
done
got=$(capture_of $F mark-hostile)
[ "$got" = "$(hexof /bin/true mark-hostile "$HOSTILE" "") false" ] && result hostile PASS intact || result hostile FAIL "$got"
got=$(capture_of $F mark-script)
[ "$got" = "$(hexof /bin/sh /tmp/s.sh mark-script y) false" ] && result script PASS "/bin/sh /tmp/s.sh mark-script y" || result script FAIL "$got"
got=$(capture_of $F mark-static)
[ "$got" = "$(hexof /bin/storm -n 0 -t mark-static) false" ] && result static PASS exact || result static FAIL "$got"

# ---- 3. a tiny ring under a storm flags every affected exec ----
# The daemon itself, kprobe mode with 16-page rings (sensor.kprobe_ring_pages,
# about three samples each), stopped (SIGSTOP) while a storm runs, so the
# rings overflow for certain while the proc connector's socket keeps every
# exec event. After SIGCONT every storm exec must get its event, and each
# event is either kprobe's exact argv or flagged (execsentry.args_truncated,
# argv from /proc or, the process gone, comm) - never an unflagged argv that
# is not the exec's. Losses must have happened, or the check proved nothing.
tiny_ring() {
	printf '[sensor]\nkprobe_ring_pages = 16\n' >/tmp/tiny.toml
	: >/tmp/tiny.err
	/bin/execsentry run --config /tmp/tiny.toml --capture kprobe --output stdout --events \
		--control /tmp/tiny.sock >/tmp/tiny.jsonl 2>>/tmp/tiny.err &
	tpid=$!
	if ! wait_ready "$tpid" /tmp/tiny.err; then
		result tiny_ring FAIL "did not start: $(tail -n 3 /tmp/tiny.err)"
		return
	fi
	kill -STOP "$tpid"
	/bin/storm -w 2 -n 300 -t tiny -p /tmp/pids2 >/dev/null 2>&1
	kill -CONT "$tpid"
	# Until the backlog is worked off: no new output line for a second.
	i=0 was=-1 now=0
	while [ "$now" != "$was" ] && [ $i -lt 60 ]; do
		i=$((i + 1))
		was=$now
		sleep 1
		now=$(wc -l </tmp/tiny.jsonl)
	done
	/bin/execsentry status --socket /tmp/tiny.sock --json >/tmp/tiny.status 2>&1
	kill -TERM "$tpid"
	wait "$tpid" 2>/dev/null
	r=$(awk '
		FNR == NR { want[$1] = 1; next }
		{
			i = index($0, "\"process\":{\"pid\":")
			if (i == 0) next
			p = substr($0, i + 17); sub(/[^0-9].*/, "", p)
			if (!(p in want) || (p in seen)) next
			seen[p] = 1; events++
			if (index($0, "\"args_truncated\":true")) {
				if (index($0, "\"args_source\":\"kprobe\"")) bad++; else flagged++
				next
			}
			j = index($0, "\"args\":[")
			s = substr($0, j + 8); sub(/\].*/, "", s)
			n = split(s, a, ",")
			split(a[3], t, "-"); split(a[4], e, "-")
			if (index($0, "\"args_source\":\"kprobe\"") && n == 4 && a[1] == "\"/bin/true\"" &&
				a[2] == "\"--es-bench=tiny\"" && t[2] "-" t[3] "\"" == e[2] "-" e[3]) exact++
			else bad++
		}
		END { printf "%d %d %d %d\n", events, exact, flagged, bad }' /tmp/pids2 /tmp/tiny.jsonl)
	set -- $r
	lost=$(sed -n 's/.*"kprobe.lost": *\([0-9]*\).*/\1/p' /tmp/tiny.status)
	missing=$(sed -n 's/.*"captures.missing": *\([0-9]*\).*/\1/p' /tmp/tiny.status)
	detail="events=$1/300 exact=$2 flagged=$3 neither=$4 kprobe.lost=${lost:-?} captures.missing=${missing:-?}"
	if [ "$1" -eq 300 ] && [ "$4" -eq 0 ] && [ "$3" -gt 0 ] && [ "${lost:-0}" -gt 0 ] &&
		[ "$3" -le "${missing:-0}" ]; then
		result tiny_ring PASS "$detail"
	else
		result tiny_ring FAIL "$detail"
		grep -F -- '--es-bench=tiny' /tmp/tiny.jsonl | grep -v '"args_truncated":true' | grep -v '"args_source":"kprobe"' |
			head -n 1 | cut -c1-400 | sed 's/^/VMLOG tiny /'
	fi
}
tiny_ring

# ---- 4. SIGKILL leaves no active probe; a restart cleans up ----
start_sensor killed
G=$(sed -n 's/.*group=\([^,]*\),.*/\1/p' /tmp/killed.err)
kill -KILL "$PID_killed"
wait "$PID_killed" 2>/dev/null
before=$(grep "$G " $TR/kprobe_profile | tr -s ' ')
/bin/true after-kill
after=$(grep "$G " $TR/kprobe_profile | tr -s ' ')
if [ -n "$before" ] && [ "$before" = "$after" ]; then
	result sigkill_inactive PASS "$G defined but not firing"
else
	result sigkill_inactive FAIL "before=[$before] after=[$after]"
fi
start_sensor restarted
if grep -q "$G/" $TR/kprobe_events; then
	result restart_cleans FAIL "$G still defined"
else
	result restart_cleans PASS "$G removed"
fi

# ---- 5. two sensors keep each other's probes ----
start_sensor second
/bin/true mark-two-1
sleep 0.2
stop_sensor second
/bin/true mark-two-2
sleep 0.2
stop_sensor restarted
a1=$(grep -c '"mark-two-1"' /tmp/restarted.jsonl)
a2=$(grep -c '"mark-two-2"' /tmp/restarted.jsonl)
b1=$(grep -c '"mark-two-1"' /tmp/second.jsonl)
if [ "$a1" = 1 ] && [ "$a2" = 1 ] && [ "$b1" = 1 ]; then
	result two_sensors PASS "both saw the shared exec, the first kept its probes after the second stopped"
else
	result two_sensors FAIL "first: $a1/$a2 second: $b1"
fi
left=$(grep -c execsentry_ $TR/kprobe_events)
[ "$left" = 0 ] && result exit_removes PASS "no probe of ours left" || result exit_removes FAIL "$left left: $(grep execsentry_ $TR/kprobe_events | cut -c1-60)"

# ---- 6. the sensor itself: auto picks kprobe; every mode's storm ----
# run_daemon NAME CAPTURE: `execsentry run` with exec events on stdout.
run_daemon() {
	name="$1"
	shift
	: >"/tmp/$name.err"
	/bin/execsentry run --output stdout --events --control "/tmp/$name.sock" "$@" >"/tmp/$name.jsonl" 2>>"/tmp/$name.err" &
	eval "PID_$name=$!"
	if ! wait_ready "$(eval echo \$PID_$name)" "/tmp/$name.err"; then
		echo "VMLOG $name did not start: $(tail -n 3 /tmp/$name.err)"
		return 1
	fi
}


if run_daemon auto && grep -q 'ready (capture=kprobe' /tmp/auto.err; then
	result auto_picks_kprobe PASS "$(grep -o 'ready (capture=[a-z]*' /tmp/auto.err)"
else
	result auto_picks_kprobe FAIL "$(grep -E 'ready|warn|error' /tmp/auto.err | head -n 3)"
fi
D0=$(cut -d' ' -f1 /proc/uptime)
/bin/storm -w 2 -n "$STORM" -t dk -p /tmp/dk.pids >/tmp/dk.out 2>&1
D1=$(cut -d' ' -f1 /proc/uptime)
settle /tmp/auto.sock
kill -TERM "$PID_auto"
wait "$PID_auto" 2>/dev/null
echo "VMLOG daemon_kprobe $(cat /tmp/dk.out)"
set -- $(exact_events /tmp/auto.jsonl dk kprobe /tmp/dk.pids)
pct=$(awk -v o="$1" -v w="$STORM" 'BEGIN { printf "%.2f", 100 * o / w }')
if [ "$1" -ge $((STORM * 999 / 1000)) ]; then
	result daemon_kprobe_exact PASS "$1/$STORM ($pct%) exact with args_source kprobe"
else
	result daemon_kprobe_exact FAIL "$1/$STORM ($pct%) events=$2; $(grep -E 'warn|error' /tmp/auto.err | grep -v rules.d | head -n 2)"
	grep -F -- '--es-bench=dk' /tmp/auto.jsonl | head -n 1 | cut -c1-600 | sed 's/^/VMLOG event /'
fi
left=$(grep -c execsentry_ $TR/kprobe_events)
[ "$left" = 0 ] && result daemon_exit_removes PASS "SIGTERM removed the probes" || result daemon_exit_removes FAIL "$left left"

# fanotify: a STORM-exec storm; exact from the handshake itself.
# An exec the watchdog had to answer (the handshake missed its deadline)
# has no argv from fanotify, so it counts against the share; its count is
# reported and bounded the same way.
for mode in fanotify proc; do
	if ! run_daemon "$mode" --capture "$mode"; then
		result "mode_$mode" FAIL "did not start: $(tail -n 2 /tmp/$mode.err)"
		continue
	fi
	n=1000
	[ "$mode" = fanotify ] && n="$STORM"
	/bin/storm -w 2 -n "$n" -t "m$mode" -p "/tmp/m$mode.pids" >"/tmp/m$mode.out" 2>&1
	settle "/tmp/$mode.sock"
	st=$(/bin/execsentry status --json --socket "/tmp/$mode.sock" 2>&1)
	kill -TERM "$(eval echo \$PID_$mode)"
	wait "$(eval echo \$PID_$mode)" 2>/dev/null
	src=""
	[ "$mode" = fanotify ] && src=fanotify
	set -- $(exact_events "/tmp/$mode.jsonl" "m$mode" "$src" "/tmp/m$mode.pids")
	pct=$(awk -v o="$1" -v w="$n" 'BEGIN { printf "%.2f", 100 * o / w }')
	rate=$(sed 's/.*rate=/rate=/' /tmp/m$mode.out)
	if [ "$mode" = fanotify ]; then
		wd=$(status_counter "$st" fanotify.watchdog_answers)
		detail="events=$2/$n exact=$1/$n ($pct%) watchdog_answers=${wd:-?}"
		for c in running_misses deferred watchdog_runnable_waits argv_read_errors handoff_dropped; do
			detail="$detail $c=$(status_counter "$st" fanotify.$c)"
		done
		detail="$detail p50/p99_us=$(echo "$st" | tr -d ' \n' | sed -n 's/.*"answer_latency_us":\[\([^]]*\)\].*/\1/p') $rate"
		# Issue 15's target, asserted: >= 99.9 % exact and <= 0.1 %
		# watchdog answers. Before the watchdog left a runnable (starved,
		# not stopped) reader its overdue events, a busy host got 99.31 %
		# (6.1, two CPU hogs beside the VM); since, 100 % there.
		met=0
		if [ "$1" -ge $((n * 999 / 1000)) ] && [ -n "$wd" ] && [ "$wd" -le $((n / 1000)) ]; then
			met=1
			detail="$detail target=met"
		else
			detail="$detail target=missed(99.9%)"
		fi
		if grep -q "ready (capture=$mode" "/tmp/$mode.err" && [ "$2" -ge $((n * 999 / 1000)) ] &&
			[ "$met" = 1 ]; then
			result "mode_$mode" PASS "$detail"
		else
			result "mode_$mode" FAIL "$detail"
		fi
		continue
	fi
	# proc mode: every exec gets its event; the exact share is its figure.
	if grep -q "ready (capture=$mode" "/tmp/$mode.err" && [ "$2" -ge 999 ]; then
		result "mode_$mode" PASS "events=$2/1000 exact=$1/1000 $rate"
	else
		result "mode_$mode" FAIL "events=$2/1000 exact=$1/1000 $(grep -o 'ready (capture=[a-z]*' /tmp/$mode.err)"
	fi
done

# ---- 7. the kernel never warned ----
if dmesg | grep -E -q 'WARNING|perf buffer not large enough|Call Trace'; then
	result dmesg FAIL "$(dmesg | grep -E 'WARNING|perf buffer' | head -n 2)"
else
	result dmesg PASS "no warning"
fi
T1=$(cut -d' ' -f1 /proc/uptime)
echo "VMINFO test_seconds $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }')"
echo VMDONE
poweroff -f

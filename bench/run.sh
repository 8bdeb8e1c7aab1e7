#!/usr/bin/env bash
# `make bench`: install the comparison tools if missing, then run the
# benchmark (bench/bench.py, Python stdlib only). Options are passed on, e.g.
#   bench/run.sh --count 2000 --only proc,forkstat
# Then, unless --only or --no-vm was given, the VM part (bench/vm.sh: Debian
# 6.1 under qemu TCG, a storm per capture mode), appended to the report.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "bench: needs root (proc connector, audit, fanotify)" >&2
	exit 2
fi
missing=()
for p in forkstat auditd gcc libc6-dev python3; do
	[[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *'install ok installed'* ]] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "bench: apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# Debian's auditd postinst may try to start the daemon; with no init
	# system that fails harmlessly, and bench.py starts its own in the
	# foreground only when none is running.
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
vm=1
args=()
for a in "$@"; do
	case "$a" in
	--no-vm) vm=0 ;;
	--only | --only=*) vm=0; args+=("$a") ;;
	*) args+=("$a") ;;
	esac
done
python3 bench/bench.py "${args[@]}"
if [ "$vm" = 1 ]; then
	bash bench/vm.sh
	{ echo; cat target/bench/vm.md; } >>target/bench/report.md
fi

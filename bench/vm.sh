#!/usr/bin/env bash
# The VM part of `make bench`: boots Debian's 6.1 kernel under qemu TCG
# (2 vCPUs, tests/vm/lib.sh) and runs bench/vm-guest.sh there: one storm
# with no sensor, then with each capture mode, in the same boot. Writes
# the guest's VMBENCH lines to target/bench/vm.txt and a table (exact argv
# and overhead relative to no sensor, TCG figures) to target/bench/vm.md.
#
#   bench/vm.sh [--suite bookworm] [--storm N] [--modes none,proc,kprobe,fanotify]
#               [--rounds R] [--timeout S]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=tests/vm/lib.sh
. "$REPO/tests/vm/lib.sh"

SUITE=bookworm
STORM=2000
MODES=none,proc,kprobe,fanotify
ROUNDS=2
TIMEOUT=600
while [ $# -gt 0 ]; do
	case "$1" in
	--suite) SUITE="$2"; shift 2 ;;
	--storm) STORM="$2"; shift 2 ;;
	--modes) MODES="$2"; shift 2 ;;
	--rounds) ROUNDS="$2"; shift 2 ;;
	--timeout) TIMEOUT="$2"; shift 2 ;;
	*) echo "usage: $0 [--suite S] [--storm N] [--modes LIST] [--rounds R] [--timeout S]" >&2; exit 2 ;;
	esac
done
vm_require_tools

OUT="$REPO/target/bench"
mkdir -p "$OUT"
BIN="$(static_sensor "$REPO")"
storm_initramfs "$REPO" "$BIN" "$HERE/vm-guest.sh" "$VM_DIR/bench.cpio.gz"
kernel="$(fetch_kernel "$SUITE")"
log="$VM_DIR/bench-$SUITE.log"
vm_log "booting $(basename "$kernel") under qemu TCG: storms of $STORM execs, modes $MODES, $ROUNDS round(s)"
rc=0
boot "$kernel" "$VM_DIR/bench.cpio.gz" "$log" "$TIMEOUT" \
	"es_storm=$STORM es_modes=$MODES es_rounds=$ROUNDS ${VM_BENCH_APPEND:-}" || rc=$?
tr -d '\r' <"$log" | grep -oE '(VMINFO|VMBENCH) .*' >"$OUT/vm.txt" || true
if ! tr -d '\r' <"$log" | grep -q '^VMDONE'; then
	vm_log "the VM did not finish (qemu rc $rc); last lines:"
	tr -d '\r' <"$log" | tail -n 15 >&2
	exit 1
fi
python3 "$HERE/vm_report.py" "$OUT/vm.txt" "$(basename "$kernel" | sed 's/^vmlinuz-//')" >"$OUT/vm.md"
cat "$OUT/vm.md"

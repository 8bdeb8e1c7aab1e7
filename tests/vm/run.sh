#!/usr/bin/env bash
# The kernel matrix: boots each Debian stock kernel under qemu TCG with an
# initramfs holding busybox-static, the static sensor, the shipped rules,
# the storm and tests/vm/guest.sh as /init; prints each kernel's VMRESULT
# lines and exits 1 when one failed or a VM did not finish.
#
#   tests/vm/run.sh [--kernels "bookworm bullseye"] [--storm N] [--timeout S]
#
# EXECSENTRY_STATIC_BIN: use this binary instead of building `make static`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source=tests/vm/lib.sh
. "$HERE/lib.sh"

KERNELS="bookworm bullseye"
STORM=5000
TIMEOUT=420
while [ $# -gt 0 ]; do
	case "$1" in
	--kernels) KERNELS="$2"; shift 2 ;;
	--storm) STORM="$2"; shift 2 ;;
	--timeout) TIMEOUT="$2"; shift 2 ;;
	*) echo "usage: $0 [--kernels LIST] [--storm N] [--timeout S]" >&2; exit 2 ;;
	esac
done

vm_require_tools

BIN="$(static_sensor "$REPO")" || exit 1
storm_initramfs "$REPO" "$BIN" "$HERE/guest.sh" "$VM_DIR/initramfs.cpio.gz" || exit 1

failed=0
for suite in $KERNELS; do
	kernel="$(fetch_kernel "$suite")" || { echo "VMKERNEL $suite FAIL fetch"; failed=1; continue; }
	log="$VM_DIR/$suite.log"
	start=$(date +%s.%N)
	rc=0
	boot "$kernel" "$VM_DIR/initramfs.cpio.gz" "$log" "$TIMEOUT" "es_storm=$STORM" || rc=$?
	secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	echo "VMKERNEL $suite $(basename "$kernel") boot+test ${secs}s (qemu rc $rc)"
	tr -d '\r' <"$log" | grep -E '^(VMRESULT|VMINFO|VMLOG)' | sed "s/^/$suite: /"
	if ! tr -d '\r' <"$log" | grep -q '^VMDONE'; then
		echo "$suite: VMRESULT finished FAIL no VMDONE (timeout or crash); last lines:"
		tr -d '\r' <"$log" | tail -n 15 | sed "s/^/$suite:   /"
		failed=1
	fi
	if tr -d '\r' <"$log" | grep -q '^VMRESULT [^ ]* FAIL'; then
		failed=1
	fi
done
exit "$failed"

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

for tool in qemu-system-x86_64 cpio gcc dpkg-deb apt-get file; do
	command -v "$tool" >/dev/null || { vm_log "missing $tool (tests/support/setup.sh installs it)"; exit 1; }
done

mkdir -p "$VM_DIR"
BIN="${EXECSENTRY_STATIC_BIN:-}"
if [ -z "$BIN" ]; then
	vm_log "make static"
	make -C "$REPO" --no-print-directory static >"$VM_DIR/static.log" 2>&1 || { tail -n 30 "$VM_DIR/static.log" >&2; exit 1; }
	BIN="$(sed -n 's/^static: \([^ ]*\) .*/\1/p' "$VM_DIR/static.log" | tail -n 1)"
	BIN="$REPO/$BIN"
fi
gcc -static -O2 -o "$VM_DIR/storm" "$REPO/bench/storm.c"

TREE="$VM_DIR/initramfs"
initramfs_tree "$TREE"
add_static "$BIN" "$TREE/bin/execsentry"
add_static "$VM_DIR/storm" "$TREE/bin/storm"
mkdir -p "$TREE/usr/share/execsentry"
cp -r "$REPO/rules" "$TREE/usr/share/execsentry/rules"
install -m 755 "$HERE/guest.sh" "$TREE/init"
build_initramfs "$VM_DIR/initramfs.cpio.gz" "$TREE"

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

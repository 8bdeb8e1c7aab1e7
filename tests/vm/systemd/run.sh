#!/usr/bin/env bash
# The installed package, tested as installed (issue 18): boots Debian
# bookworm's stock kernel under qemu TCG with a whole bookworm root
# (systemd, journald, rsyslog) as its initramfs, and runs scenario.sh in it
# as a systemd unit: dpkg -i of the .deb, the service's readiness, hardening
# score, capabilities, alerts in the journal and through rsyslog, tail,
# reload, a bad config, stop under an exec storm, purge.
#
#   tests/vm/systemd/run.sh [--deb PATH]     (root: debootstrap, dpkg-deb)
#
# Without --deb the package is built with `make deb`. The root filesystem is
# cached as target/vm/systemd/rootfs-<key>.cpio (key: package list and
# rootfs.sh); the kernel is cached by the kernel-matrix helpers. Exits 0
# only when every check in the guest passed; the guest's report and its
# console log stay in target/vm/systemd/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
VM_DIR="${VM_DIR:-$ROOT/target/vm}"
SD_DIR="$VM_DIR/systemd"
# Seconds for the whole boot and scenario; the guest's own unit gives up
# at 420 s and powers off.
BOOT_LIMIT="${BOOT_LIMIT:-540}"
# The whole root lives in guest memory (tmpfs, at most half of it).
VM_MEM="${VM_MEM:-3072}"

# shellcheck source=tests/vm/lib.sh
. "$ROOT/tests/vm/lib.sh"
# shellcheck source=tests/vm/systemd/rootfs.sh
. "$HERE/rootfs.sh"

log() { printf 'vm-systemd: %s\n' "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}

DEB=
while [ $# -gt 0 ]; do
	case "$1" in
	--deb)
		DEB="$2"
		shift 2
		;;
	*) die "unknown argument $1" ;;
	esac
done

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, cpio of a root-owned tree)"
for tool in qemu-system-x86_64 debootstrap cpio gcc; do
	command -v "$tool" >/dev/null || die "$tool missing (tests/support/setup.sh installs it)"
done
mkdir -p "$SD_DIR"
t_start=$(date +%s)

# --- the package -------------------------------------------------------------
if [ -z "$DEB" ]; then
	log "make deb"
	make -C "$ROOT" deb >&2
	VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
	DEB="$ROOT/target/packages/execsentry_${VERSION}-1_amd64.deb"
fi
[ -f "$DEB" ] || die "no package at $DEB"
t_deb=$(date +%s)

# --- the kernel --------------------------------------------------------------
KERNEL="$(fetch_kernel bookworm)" || die "cannot fetch bookworm's kernel"
log "kernel: $KERNEL"

# --- the cached root filesystem ----------------------------------------------
KEY="$(rootfs_key)"
BASE="$SD_DIR/rootfs-$KEY.cpio"
if [ -f "$BASE" ]; then
	log "rootfs: cached $BASE"
else
	log "rootfs: debootstrap $ROOTFS_SUITE (${ROOTFS_PACKAGES[*]}) -> $BASE"
	build="$SD_DIR/build-$KEY"
	rm -rf "$build"
	rootfs_build "$build/root" || die "debootstrap failed"
	(cd "$build/root" && find . -print0 | cpio --null -o -H newc --quiet) >"$build/rootfs.cpio"
	mv "$build/rootfs.cpio" "$BASE"
	rm -rf "$build"
	# Older keys are stale caches.
	find "$SD_DIR" -maxdepth 1 -name 'rootfs-*.cpio' ! -name "rootfs-$KEY.cpio" -delete
fi
t_rootfs=$(date +%s)

# --- this run's files, appended as a second cpio archive ---------------------
# The kernel unpacks concatenated archives in order, so the cached root
# stays untouched and this one adds the package, the scenario and its unit.
OVL="$SD_DIR/overlay"
rm -rf "$OVL"
mkdir -p "$OVL/opt/vmtest/bin" "$OVL/etc/systemd/system/multi-user.target.wants"
cp "$DEB" "$OVL/opt/vmtest/execsentry.deb"
install -m 0755 "$HERE/scenario.sh" "$OVL/opt/vmtest/scenario.sh"
install -m 0644 "$HERE/execsentry-vmtest.service" "$OVL/etc/systemd/system/execsentry-vmtest.service"
ln -s ../execsentry-vmtest.service "$OVL/etc/systemd/system/multi-user.target.wants/execsentry-vmtest.service"
gcc -static -O2 -o "$OVL/opt/vmtest/bin/storm" "$HERE/storm.c"
# A 32-bit program named like the local rule's marker program.
mkdir -p "$OVL/opt/vmtest/bin32"
gcc -m32 -static -nostdlib -ffreestanding -fno-pic -no-pie -O2 -o "$OVL/opt/vmtest/bin32/vmtest-reload" "$HERE/t32.c" ||
	die "cannot build the 32-bit test program (gcc -m32)"
# A copied busybox named kubectl: the rules match on the executable's name.
bb=$(_busybox) || die "no static busybox"
cp "$bb" "$OVL/opt/vmtest/bin/kubectl"
# The README's rsyslog forwarding snippet as printed, with its TLS action
# turned into a local file action (same template, same queue settings).
awk '
	/^### Forwarding alerts with rsyslog/ { sect = 1 }
	sect && /^```$/ { if (inblock) exit; inblock = 1; next }
	inblock && /StreamDriver/ { next }
	inblock {
		sub(/type="omfwd" target="[^"]*" port="[^"]*" protocol="[^"]*"/,
			"type=\"omfile\" file=\"/var/log/execsentry-forwarded.log\"")
		print
	}' "$ROOT/README.md" >"$OVL/opt/vmtest/50-execsentry.conf"
grep -q 'omfile' "$OVL/opt/vmtest/50-execsentry.conf" || die "README's rsyslog snippet not found or not in the expected form"
(cd "$OVL" && find . -print0 | cpio --null -o -H newc --quiet --owner=0:0) >"$SD_DIR/overlay.cpio"
cat "$BASE" "$SD_DIR/overlay.cpio" >"$SD_DIR/initrd.cpio"

# --- boot ----------------------------------------------------------------------
CONSOLE="$SD_DIR/console.log"
REPORT="$SD_DIR/report.log"
rm -f "$CONSOLE" "$REPORT"
log "booting (TCG, limit ${BOOT_LIMIT}s; console: $CONSOLE)"
rc=0
timeout --kill-after=5 "$BOOT_LIMIT" qemu-system-x86_64 \
	-accel tcg -cpu max -smp 2 -m "$VM_MEM" \
	-kernel "$KERNEL" -initrd "$SD_DIR/initrd.cpio" \
	-append "console=ttyS0 rdinit=/sbin/init panic=-1 quiet loglevel=3 systemd.show_status=error" \
	-display none -vga none -no-reboot -monitor none -nic none \
	-serial "file:$CONSOLE" -serial "file:$REPORT" \
	</dev/null >/dev/null 2>&1 || rc=$?
t_end=$(date +%s)
[ -f "$REPORT" ] && sed -i 's/\r$//' "$REPORT"
cat "$REPORT" 2>/dev/null || true
log "times: package $((t_deb - t_start)) s, rootfs $((t_rootfs - t_deb)) s, boot+scenario $((t_end - t_rootfs)) s, total $((t_end - t_start)) s"
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
	tail -n 30 "$CONSOLE" >&2 || true
	die "the VM did not power off within ${BOOT_LIMIT}s"
fi
end=$(grep '^END ' "$REPORT" 2>/dev/null | tail -n 1 || true)
if [ -z "$end" ]; then
	tail -n 30 "$CONSOLE" >&2 || true
	die "the scenario did not finish (no END line; qemu exit $rc)"
fi
fails=$(sed -n 's/.*fail=\([0-9]*\).*/\1/p' <<<"$end")
passes=$(sed -n 's/.*pass=\([0-9]*\).*/\1/p' <<<"$end")
[ "$fails" = 0 ] || die "$fails checks failed (report: $REPORT)"
# Guards against a scenario that stopped checking early but still ended.
[ "$passes" -ge 35 ] || die "only $passes checks ran"
log "passed: $passes checks"

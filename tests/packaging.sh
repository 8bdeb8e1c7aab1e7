#!/usr/bin/env bash
# Package tests (`make package-test`, root): builds the .deb and the .rpm,
# installs, reinstalls, removes and purges the .deb on this machine, checks
# the .rpm's layout against it, runs lintian and `systemd-analyze verify`,
# and, where docker works, runs the FROM scratch image against the host.
#
# Leaves the machine as it found it: the package is purged on exit, even on
# failure, and it refuses to start if execsentry is already installed
# (that install is not ours to remove).
set -euo pipefail

cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() {
	printf '    FAIL: %s\n' "$*" >&2
	exit 1
}

if [ "$(id -u)" -ne 0 ]; then
	echo "tests/packaging.sh: needs root (dpkg -i)" >&2
	exit 1
fi
# Captured first: with pipefail, `dpkg-query | grep -q` can fail with
# SIGPIPE when grep exits before the writer is done.
pkg_status() { dpkg-query -W -f='${Status}' execsentry 2>/dev/null || true; }
if [[ "$(pkg_status)" == *' installed'* ]]; then
	echo "tests/packaging.sh: execsentry is already installed here; not touching it" >&2
	exit 1
fi

TMP=$(mktemp -d)
CONTAINER="execsentry-package-test-$$"
cleanup() {
	local rc=$?
	docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
	if [ -n "$(pkg_status)" ]; then
		dpkg --purge execsentry >/dev/null 2>&1 || true
	fi
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT

# Tools the checks call; installed only when missing.
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v rpm >/dev/null || need+=(rpm)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v file >/dev/null || need+=(file)
if [ "${#need[@]}" -gt 0 ]; then
	step "apt-get install ${need[*]}"
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# Before the Makefile includes packaging/package.mk, name it explicitly.
MAKE_PKG=(make)
grep -q 'packaging/package.mk' Makefile || MAKE_PKG=(make -f Makefile -f packaging/package.mk)

step "build: make deb rpm"
"${MAKE_PKG[@]}" deb rpm
VERSION=$(sed -n '0,/^version = "\(.*\)"/s//\1/p' Cargo.toml)
DEB="target/packages/execsentry_${VERSION}-1_amd64.deb"
RPM="target/packages/execsentry-${VERSION}-1.x86_64.rpm"
[ -f "$DEB" ] || fail "$DEB not built"
[ -f "$RPM" ] || fail "$RPM not built"

step "lintian $DEB"
lintian "$DEB" >"$TMP/lintian" 2>&1 || true
cat "$TMP/lintian"
if grep -q '^E:' "$TMP/lintian"; then fail "lintian reports errors"; fi
ok "no lintian errors"

step "dpkg -i (no systemd running here: the scripts must cope)"
dpkg -i "$DEB" </dev/null
ok "installed"

step "binary"
file /usr/bin/execsentry | tee "$TMP/file"
grep -Eq 'static(-pie)? linked' "$TMP/file" || fail "/usr/bin/execsentry is not static"
# ldd exits 1 for a static non-PIE binary: its output, not its status.
ldd_out=$(ldd /usr/bin/execsentry 2>&1 || true)
[[ $ldd_out =~ statically\ linked|not\ a\ dynamic\ executable ]] || fail "ldd finds shared libraries"
/usr/bin/execsentry --version | tee "$TMP/version"
grep -q "^execsentry $VERSION" "$TMP/version" || fail "--version does not print $VERSION"
ok "static, --version works"

step "execsentry config check (what run checks before it starts)"
execsentry config check >"$TMP/config"
grep -q '/usr/share/execsentry/rules' "$TMP/config" || fail "effective config lacks the shipped rules path"
execsentry rules check | tee "$TMP/rules"
grep -Eq '^ok: [1-9][0-9]* rules' "$TMP/rules" || fail "no shipped rules loaded"
ok "config and shipped rules load from their installed paths"

step "conffiles, group, enablement"
dpkg-query --control-show execsentry conffiles | tee "$TMP/conffiles"
for f in /etc/execsentry/execsentry.toml /etc/execsentry/rules.d/README /etc/logrotate.d/execsentry; do
	grep -q "^$f\$" "$TMP/conffiles" || fail "$f is not a conffile"
done
getent group execsentry >/dev/null || fail "group execsentry not created"
# deb-systemd-helper enables offline, so an image built with the package
# starts the sensor on boot.
[ -L /etc/systemd/system/multi-user.target.wants/execsentry.service ] || fail "unit not enabled"
ok "conffiles listed, group created, unit enabled"

step "systemd-analyze verify"
# --man=no: the Documentation= man page is checked by `man -w` below, and
# man-db may be absent on minimal hosts.
systemd-analyze verify --man=no /lib/systemd/system/execsentry.service
if command -v man >/dev/null; then man -w execsentry >/dev/null || fail "man page not found"; fi
ok "unit verifies"

step "an edited conffile survives a reinstall"
echo "# local edit $$" >>/etc/execsentry/execsentry.toml
dpkg -i "$DEB" </dev/null
grep -q "# local edit $$" /etc/execsentry/execsentry.toml || fail "reinstall overwrote the edit"
ok "edit kept"

step "dpkg -r keeps the configuration"
dpkg -r execsentry </dev/null
[ ! -e /usr/bin/execsentry ] || fail "/usr/bin/execsentry left after remove"
grep -q "# local edit $$" /etc/execsentry/execsentry.toml || fail "remove lost the configuration"
ok "binary gone, configuration kept"

step "dpkg --purge leaves nothing behind"
echo 'placeholder = true' >/etc/execsentry/rules.d/local.toml
dpkg --purge execsentry </dev/null
for p in /etc/execsentry /usr/share/execsentry /usr/bin/execsentry /lib/systemd/system/execsentry.service \
	/etc/systemd/system/multi-user.target.wants/execsentry.service /etc/systemd/system/execsentry.service \
	/etc/logrotate.d/execsentry /usr/lib/sysusers.d/execsentry.conf /var/log/execsentry; do
	if [ -e "$p" ] || [ -L "$p" ]; then fail "$p left after purge"; fi
done
! getent group execsentry >/dev/null || fail "group execsentry left after purge"
! dpkg-query -W execsentry >/dev/null 2>&1 || fail "dpkg still knows execsentry"
ok "purged"

step "the .rpm has the same layout"
rpm -qlp "$RPM" | tee "$TMP/rpm-files"
# The same file set once the distributions' own places are mapped:
# systemd units (/lib vs /usr/lib), zsh completions, and the Debian-only
# changelog/copyright/lintian files.
normalize() {
	sed -e 's|^/lib/systemd/|/usr/lib/systemd/|' \
		-e 's|/zsh/vendor-completions/|/zsh/site-functions/|' |
		grep -Ev '^/usr/share/(doc|lintian)/' | sort
}
dpkg-deb -c "$DEB" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\.||' | normalize >"$TMP/deb-files"
rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$RPM" | awk '$1 !~ /^d/ {print $2}' | normalize >"$TMP/rpm-files-only"
diff -u "$TMP/deb-files" "$TMP/rpm-files-only" || fail ".deb and .rpm ship different files"
rpm -qp --configfiles "$RPM" | sort | tee "$TMP/rpm-conf"
sort "$TMP/conffiles" | diff -u - "$TMP/rpm-conf" || fail "rpm config files differ from dpkg conffiles"
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" | grep '^cn ' | awk '{print $2}' | sort |
	diff -u "$TMP/rpm-conf" - || fail "rpm config files are not all %config(noreplace)"
rpm -qp --scripts "$RPM" >"$TMP/rpm-scripts"
for s in preinstall postinstall preuninstall postuninstall; do
	grep -q "^$s scriptlet" "$TMP/rpm-scripts" || fail "rpm has no $s scriptlet"
done
for d in /etc/execsentry /etc/execsentry/rules.d /usr/share/execsentry /usr/share/execsentry/rules; do
	grep -qx "$d" "$TMP/rpm-files" || fail "rpm does not own $d (erase would leave it)"
done
ok "same files, same config files (noreplace), all four scriptlets, directories owned"

step "container image (FROM scratch) against the host"
if ! docker info >/dev/null 2>&1; then
	echo "    skipped: docker is not available (run tests/support/setup.sh to start dockerd)"
	exit 0
fi
"${MAKE_PKG[@]}" image
# --pid=host: the kernel ignores proc-connector subscriptions from other pid
# namespaces; --net=host: the connector exists only in the initial network
# namespace (from another one the subscription fails with ECONNREFUSED).
docker run -d --name "$CONTAINER" --pid=host --net=host --cap-drop=ALL \
	--cap-add=NET_ADMIN --cap-add=SYS_PTRACE --cap-add=DAC_READ_SEARCH --cap-add=SETPCAP \
	"execsentry:$VERSION" run --output stdout --events >/dev/null
# Logs go to a file before grep: with pipefail, `docker logs | grep -q`
# fails when grep closes the pipe early.
logs() { docker logs "$CONTAINER" >"$TMP/logs" 2>&1 || true; }
for _ in $(seq 50); do
	logs
	grep -q 'execsentry: ready' "$TMP/logs" && break
	sleep 0.2
done
grep 'execsentry: ready' "$TMP/logs" || {
	cat "$TMP/logs" >&2
	fail "sensor in the container did not become ready"
}
# A harmless stand-in for a container admin command: a program named
# `docker` that ignores its arguments (the ones the shipped rules alert on)
# and lives for a second, so the sensor can read its /proc/<pid>/cmdline
# (the proc connector's exec event carries no arguments).
mkdir -p "$TMP/bin"
printf '#include <unistd.h>\nint main(void) { sleep(1); return 0; }\n' |
	cc -x c -O2 -o "$TMP/bin/docker" -
# Not the container's name: `docker logs <name>` alerts too.
marker="pkgtest-marker-$$-$RANDOM"
"$TMP/bin/docker" run --privileged --pid=host -v /:/host "$marker" true
# One process reading the file: `grep | head` under pipefail fails with
# SIGPIPE as soon as head has its line.
first_alert() {
	awk -v m="$marker" 'index($0, m) && index($0, "\"kind\":\"alert\"") {
		print substr($0, 1, 300); found = 1; exit
	} END { exit !found }' "$TMP/logs"
}
found=
for _ in $(seq 50); do
	logs
	if first_alert >/dev/null; then
		found=1
		break
	fi
	sleep 0.2
done
[ -n "$found" ] || {
	cp "$TMP/logs" /tmp/execsentry-package-test.log
	tail -n 20 "$TMP/logs" >&2
	fail "no alert for the host's exec"
}
first_alert
pid=$(docker inspect -f '{{.State.Pid}}' "$CONTAINER")
grep -E '^Cap(Eff|Bnd):' "/proc/$pid/status"
# CAP_DAC_READ_SEARCH (bit 2) and CAP_SYS_PTRACE (bit 19) only.
grep -q '^CapEff:[[:space:]]*0000000000080004$' "/proc/$pid/status" || fail "unexpected CapEff"
ok "alert read from the container; capabilities dropped to SYS_PTRACE + DAC_READ_SEARCH"

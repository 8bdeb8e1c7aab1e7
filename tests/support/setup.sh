#!/usr/bin/env bash
# Prepare a Debian machine for execsentry's tests: packages, Rust components,
# a running Docker daemon and the local busybox image the container tests use.
#
# Idempotent: every step checks first and does nothing when already done, so
# `make test` can call it on every run. Off CI it does not fail because Docker
# cannot start (the container tests fall back to runc, and this script says
# so); with CI=true or EXECSENTRY_REQUIRE_ALL=1 that is an error, since those
# tests would then fail rather than skip.
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }

IMAGE="${EXECSENTRY_TEST_IMAGE:-execsentry-busybox:test}"
# dockerd writes here when we start it; /tmp survives `cargo clean`.
DOCKERD_LOG="${EXECSENTRY_DOCKERD_LOG:-/tmp/execsentry-dockerd.log}"

# Packages the tests call directly:
#   docker.io runc busybox-static  real containers and the busybox rootfs
#   rsyslog rsyslog-gnutls gnutls-bin openssl  syslog / TLS sink tests
#   forkstat                        comparison in `make bench`
#   bsdutils (script), util-linux (setpriv)  a pty for `docker exec -it`, dropping caps
#   golang-go                       Go binaries for the identity tests
#   libcap2-bin (capsh)             dropping CAP_NET_ADMIN for the self-check test
#   procps (pgrep, ps), tar         cleanup checks, building the rootfs tarball
#   gcc, libc6-dev, python3         the bench's storm driver and its reader
#   qemu-system-x86 cpio file       the kernel matrix (tests/vm): TCG boots of
#                                   Debian kernels from an initramfs
#   fuse3 (fusermount3)             the stalling FUSE server of tests/fuse_live.rs
PACKAGES=(docker.io runc busybox-static rsyslog rsyslog-gnutls gnutls-bin
	openssl forkstat bsdutils util-linux libcap2-bin procps tar gcc libc6-dev python3 golang-go
	qemu-system-x86 cpio file fuse3)
# The installed-package VM test (tests/vm/systemd, `make package-test`):
#   debootstrap                     the bookworm root with systemd and rsyslog
PACKAGES+=(debootstrap)

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		# dpkg-query is cheap and offline; only touch apt when something lacks.
		if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != *'install ok installed'* ]]; then
			missing+=("$p")
		fi
	done
	if [ "${#missing[@]}" -eq 0 ]; then
		log "packages: all present"
		return
	fi
	if [ "$(id -u)" -ne 0 ]; then
		log "packages missing (${missing[*]}) but not root: skipping apt-get"
		if require_all; then
			log "ERROR: with CI/EXECSENTRY_REQUIRE_ALL the tests needing them would fail"
			exit 1
		fi
		return
	fi
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
}

rust_components() {
	# A non-login shell (CI) may not have ~/.cargo/bin on PATH yet.
	if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
		# shellcheck disable=SC1091
		. "$HOME/.cargo/env"
	fi
	if ! command -v cargo >/dev/null 2>&1; then
		log "ERROR: cargo not found; install Rust with rustup (https://rustup.rs), edition 2024 needs Rust >= 1.85"
		exit 1
	fi
	if command -v rustup >/dev/null 2>&1; then
		local installed c
		installed="$(rustup component list --installed 2>/dev/null || true)"
		for c in rustfmt clippy; do
			if ! grep -q "^$c" <<<"$installed"; then
				log "rustup component add $c"
				rustup component add "$c"
			fi
		done
	fi
	log "rust: $(cargo --version)"
}

start_dockerd() {
	if timeout 20 docker info >/dev/null 2>&1; then
		return 0
	fi
	if ! command -v dockerd >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
		return 1
	fi
	# No systemd here: start the daemon ourselves, detached from this shell so
	# it outlives the script. --iptables=false and --bridge=none because the
	# tests need no network and a VM/CI box may lack iptables or br_netfilter;
	# cgroupfs is dockerd's default driver and works on cgroup v1 and v2.
	log "starting dockerd (log: $DOCKERD_LOG)"
	setsid dockerd --iptables=false --ip-masq=false --bridge=none \
		>"$DOCKERD_LOG" 2>&1 </dev/null &
	local i
	for i in $(seq 1 60); do
		if timeout 5 docker info >/dev/null 2>&1; then
			log "dockerd up after ${i}s"
			return 0
		fi
		sleep 1
	done
	log "dockerd did not answer within 60 s; last log lines:"
	tail -n 15 "$DOCKERD_LOG" 2>/dev/null | sed 's/^/    /' || true
	return 1
}

build_image() {
	if docker image inspect "$IMAGE" >/dev/null 2>&1; then
		log "image $IMAGE: present"
		return 0
	fi
	local bb root
	bb="$(command -v busybox || true)"
	[ -x /bin/busybox ] && bb=/bin/busybox
	if [ -z "$bb" ]; then
		log "busybox not found: cannot build $IMAGE"
		return 1
	fi
	root="$(mktemp -d /tmp/execsentry-rootfs.XXXXXX)"
	# RETURN trap: the temp rootfs goes away however this function ends.
	# shellcheck disable=SC2064
	trap "rm -rf '$root'" RETURN
	mkdir -p "$root"/{bin,dev,etc,proc,sys,tmp,root}
	chmod 1777 "$root/tmp"
	cp "$bb" "$root/bin/busybox"
	local applet
	for applet in $("$root/bin/busybox" --list); do
		[ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
	done
	# Real copies, not symlinks: the sensor must see an exe named like the tool
	# (the rules match on process.name / executable of kubectl, crictl, ...).
	for applet in kubectl crictl ctr docker; do
		rm -f "$root/bin/$applet"
		cp "$bb" "$root/bin/$applet"
	done
	echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
	echo 'root:x:0:' >"$root/etc/group"
	log "docker import -> $IMAGE"
	tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
}

# The tests' own rule (tests/common `require_all`): in CI nothing may skip.
require_all() {
	[[ "${CI:-}" == true || "${CI:-}" == 1 || "${EXECSENTRY_REQUIRE_ALL:-}" == 1 || "${EXECSENTRY_REQUIRE_ALL:-}" == true ]]
}

main() {
	install_packages
	rust_components
	if start_dockerd && build_image; then
		echo "docker: available (image $IMAGE)"
	else
		if require_all; then
			log "ERROR: docker is NOT available; with CI/EXECSENTRY_REQUIRE_ALL the container tests would fail"
			exit 1
		fi
		echo "docker: NOT available, tests fall back to runc"
	fi
	check_tools
}

# The tools the live tests run, each asked for its version: a package can
# be installed and its command still not on PATH (or broken).
check_tools() {
	local t bad=()
	for t in "runc --version" "go version" "rsyslogd -v" "busybox --help" "script --version" \
		"openssl version" "certtool --version" "capsh --help" "setpriv --version"; do
		# shellcheck disable=SC2086
		if ! $t >/dev/null 2>&1; then
			bad+=("${t%% *}")
		fi
	done
	if [ "${#bad[@]}" -eq 0 ]; then
		log "tools: runc $(runc --version | sed -n 1p | awk '{print $3}'), $(go version | awk '{print $3}'), rsyslogd, busybox: all run"
		return
	fi
	log "tools that do not run: ${bad[*]}"
	if require_all; then
		log "ERROR: with CI/EXECSENTRY_REQUIRE_ALL the tests needing them would fail"
		exit 1
	fi
}

main "$@"

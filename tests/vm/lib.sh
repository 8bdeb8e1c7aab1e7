# shellcheck shell=bash
# Kernel-matrix helpers: fetch a Debian stock kernel, build an initramfs,
# boot it under qemu TCG and collect what the guest prints on its serial
# console. Sourced by tests/vm/run.sh and by other VM harnesses (the
# installed-package VM reuses fetch_kernel and boot).
#
#   fetch_kernel SUITE        -> prints the path of an unpacked vmlinuz
#                                (SUITE: bookworm | bullseye)
#   build_initramfs OUT DIR   -> OUT.cpio.gz from the tree DIR (busybox and
#                                /init must already be in DIR)
#   initramfs_tree DIR        -> DIR with busybox-static and its applets
#   add_static BIN DIR/path   -> copies a static binary, refuses a dynamic one
#   boot KERNEL INITRD LOG TIMEOUT [APPEND] -> runs the VM until it powers
#                                off or TIMEOUT seconds pass; the serial
#                                console lands in LOG
#   static_sensor REPO         -> prints the path of the static sensor
#                                (`make static`, or $EXECSENTRY_STATIC_BIN)
#   storm_initramfs REPO BIN INIT OUT -> OUT.cpio.gz with busybox, the
#                                sensor BIN, the storm, the shipped rules,
#                                tests/vm/exact.sh and INIT as /init
#
# Everything lands under $VM_DIR (default target/vm); downloads are cached
# there, so a second run needs no network. The machine's own apt
# configuration is only read (bookworm is its configured suite), never
# changed: bullseye gets its own sources list, lists and cache in $VM_DIR.

VM_DIR="${VM_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/vm}"

# Known-good kernels (checked by hand, see issue 15). When the archive no
# longer carries one, the newest matching package is taken instead.
VM_PIN_bookworm="${VM_PIN_bookworm:-linux-image-6.1.0-57-amd64}"
VM_PIN_bullseye="${VM_PIN_bullseye:-linux-image-5.10.0-32-amd64}"
VM_PATTERN_bookworm='^linux-image-6\.1\.0-[0-9]+-amd64$'
VM_PATTERN_bullseye='^linux-image-5\.10\.0-[0-9]+-amd64$'

vm_log() { printf 'vm: %s\n' "$*" >&2; }

# apt options for SUITE: none for the configured suite, a private apt
# tree for bullseye.
_apt_opts() {
	local suite="$1"
	if [ "$suite" = bookworm ]; then
		return 0
	fi
	local root="$VM_DIR/apt-$suite"
	printf '%s\n' \
		-o "Dir::Etc::sourcelist=$root/sources.list" \
		-o "Dir::Etc::sourceparts=$root/sources.list.d" \
		-o "Dir::Etc::preferencesparts=$root/preferences.d" \
		-o "Dir::State::Lists=$root/lists" \
		-o "Dir::Cache=$root/cache" \
		-o "Dir::State::status=$root/status" \
		-o "Debug::NoLocking=1"
}

_apt_prepare() {
	local suite="$1"
	[ "$suite" = bookworm ] && return 0
	local root="$VM_DIR/apt-$suite"
	mkdir -p "$root/sources.list.d" "$root/preferences.d" "$root/lists/partial" "$root/cache/archives/partial"
	: >"$root/status"
	cat >"$root/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security $suite-security main
EOF
	# Lists are refreshed at most once a day: the kernel is cached anyway.
	if [ -z "$(find "$root/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
		local opts
		mapfile -t opts < <(_apt_opts "$suite")
		vm_log "apt-get update ($suite, private lists in $root)"
		apt-get -q "${opts[@]}" update >&2 || return 1
	fi
}

# The package to download: the pin if apt still knows it, else the newest.
_pick_package() {
	local suite="$1" pin pattern opts
	pin="VM_PIN_$suite"
	pin="${!pin}"
	pattern="VM_PATTERN_$suite"
	pattern="${!pattern}"
	mapfile -t opts < <(_apt_opts "$suite")
	if apt-cache "${opts[@]}" show "$pin" >/dev/null 2>&1; then
		echo "$pin"
		return 0
	fi
	local newest
	newest="$(apt-cache "${opts[@]}" pkgnames linux-image- | grep -E "$pattern" | sort -V | tail -n 1)"
	if [ -z "$newest" ]; then
		vm_log "no package matching $pattern in $suite"
		return 1
	fi
	vm_log "$pin is gone from $suite: taking the newest, $newest"
	echo "$newest"
}

fetch_kernel() {
	local suite="$1" dir
	dir="$VM_DIR/kernels/$suite"
	mkdir -p "$dir"
	local found
	found="$(find "$dir" -path '*/boot/vmlinuz-*' 2>/dev/null | sort -V | tail -n 1)"
	if [ -n "$found" ]; then
		echo "$found"
		return 0
	fi
	_apt_prepare "$suite" || return 1
	local pkg opts
	pkg="$(_pick_package "$suite")" || return 1
	mapfile -t opts < <(_apt_opts "$suite")
	vm_log "apt-get download $pkg ($suite)"
	(cd "$dir" && apt-get -q "${opts[@]}" download "$pkg" >&2) || return 1
	local deb
	deb="$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)"
	[ -n "$deb" ] || { vm_log "download of $pkg left no .deb"; return 1; }
	dpkg-deb -x "$deb" "$dir/root"
	rm -f "$deb"
	found="$(find "$dir/root/boot" -name 'vmlinuz-*' | head -n 1)"
	[ -n "$found" ] || { vm_log "$pkg holds no vmlinuz"; return 1; }
	echo "$found"
}

_busybox() {
	local bb
	for bb in /bin/busybox /usr/bin/busybox; do
		if [ -x "$bb" ] && file -L "$bb" | grep -Eq '(statically|static-pie) linked'; then
			echo "$bb"
			return 0
		fi
	done
	vm_log "no static busybox (apt-get install busybox-static)"
	return 1
}

add_static() {
	local bin="$1" dest="$2"
	if ! file -L "$bin" | grep -Eq '(statically|static-pie) linked'; then
		vm_log "$bin is not statically linked"
		return 1
	fi
	mkdir -p "$(dirname "$dest")"
	cp "$bin" "$dest"
}

initramfs_tree() {
	local dir="$1" bb applet
	bb="$(_busybox)" || return 1
	rm -rf "$dir"
	mkdir -p "$dir"/{bin,sbin,dev,etc,proc,sys,tmp,root,run,usr/bin,usr/sbin}
	chmod 1777 "$dir/tmp"
	cp "$bb" "$dir/bin/busybox"
	for applet in $("$dir/bin/busybox" --list); do
		[ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
	done
	echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/etc/passwd"
	echo 'root:x:0:' >"$dir/etc/group"
}

build_initramfs() {
	local out="$1" dir="$2"
	(cd "$dir" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$out"
}

# Runs the VM to completion. The guest powers off (poweroff -f) when its
# script ends; TIMEOUT bounds a hang. Returns 0 when the VM stopped by
# itself, 124 on timeout.
boot() {
	local kernel="$1" initrd="$2" log="$3" limit="$4" append="${5:-}"
	local rc=0
	timeout --kill-after=5 "$limit" qemu-system-x86_64 \
		-accel tcg -cpu max -smp 2 -m 1024 \
		-kernel "$kernel" -initrd "$initrd" \
		-append "console=ttyS0 panic=-1 oops=panic quiet loglevel=4 $append" \
		-nographic -no-reboot -monitor none -serial "file:$log" \
		</dev/null >/dev/null 2>&1 || rc=$?
	return "$rc"
}

static_sensor() {
	local repo="$1" bin="${EXECSENTRY_STATIC_BIN:-}"
	if [ -n "$bin" ]; then
		echo "$bin"
		return 0
	fi
	mkdir -p "$VM_DIR"
	vm_log "make static"
	make -C "$repo" --no-print-directory static >"$VM_DIR/static.log" 2>&1 || {
		tail -n 30 "$VM_DIR/static.log" >&2
		return 1
	}
	bin="$(sed -n 's/^static: \([^ ]*\) .*/\1/p' "$VM_DIR/static.log" | tail -n 1)"
	echo "$repo/$bin"
}

storm_initramfs() {
	local repo="$1" bin="$2" init="$3" out="$4" tree="${4%.cpio.gz}"
	mkdir -p "$VM_DIR"
	gcc -static -O2 -o "$VM_DIR/storm" "$repo/bench/storm.c" || return 1
	initramfs_tree "$tree" || return 1
	add_static "$bin" "$tree/bin/execsentry" || return 1
	add_static "$VM_DIR/storm" "$tree/bin/storm" || return 1
	mkdir -p "$tree/usr/share/execsentry"
	cp -r "$repo/rules" "$tree/usr/share/execsentry/rules"
	cp "$repo/tests/vm/exact.sh" "$tree/usr/share/execsentry/exact.sh"
	install -m 755 "$init" "$tree/init"
	build_initramfs "$out" "$tree"
}

# Fails (exit 1) when a tool the VM harness needs is missing.
vm_require_tools() {
	for tool in qemu-system-x86_64 cpio gcc dpkg-deb apt-get file; do
		command -v "$tool" >/dev/null || { vm_log "missing $tool (tests/support/setup.sh installs it)"; exit 1; }
	done
}

# shellcheck shell=bash
# The installed-package VM's root filesystem: Debian bookworm from
# debootstrap, trimmed, set up to boot straight into systemd from an
# initramfs. Sourced by run.sh; this file's text is part of the cache key,
# so editing it rebuilds the cached root.

# What the scenario needs on top of minbase (which has dpkg, apt,
# util-linux's unshare and runuser, passwd's useradd).
ROOTFS_PACKAGES=(systemd systemd-sysv dbus rsyslog procps)
ROOTFS_SUITE=bookworm
ROOTFS_MIRROR="${ROOTFS_MIRROR:-http://deb.debian.org/debian}"

# Units a test boot does not want: timers that would run apt or scrubs in
# the middle of the scenario, and logins on the consoles.
ROOTFS_MASK=(apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service
	e2scrub_all.timer e2scrub_reap.service fstrim.timer getty@.service serial-getty@.service
	console-getty.service systemd-firstboot.service)

# rootfs_build DIR: debootstrap into DIR and prepare it for booting.
rootfs_build() {
	local dir="$1" u
	debootstrap --variant=minbase --include="$(
		IFS=,
		echo "${ROOTFS_PACKAGES[*]}"
	)" "$ROOTFS_SUITE" "$dir" "$ROOTFS_MIRROR" >&2 || return 1
	rootfs_prepare "$dir"
}

rootfs_prepare() {
	local dir="$1" u
	# A fixed machine id: an empty one would make systemd treat each boot
	# as a first boot.
	echo 0123456789abcdef0123456789abcdef >"$dir/etc/machine-id"
	echo vmtest >"$dir/etc/hostname"
	printf '127.0.0.1 localhost\n127.0.1.1 vmtest\n' >"$dir/etc/hosts"
	: >"$dir/etc/fstab"
	for u in "${ROOTFS_MASK[@]}"; do
		ln -sfn /dev/null "$dir/etc/systemd/system/$u"
	done
	# Downloaded packages, lists, docs and locales: nothing the boot needs,
	# and all of it would be unpacked into the guest's memory.
	rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/* \
		"$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
}

# rootfs_key: changes with the package list and with this file.
rootfs_key() {
	{
		printf '%s\n' "$ROOTFS_SUITE" "${ROOTFS_PACKAGES[@]}" "${ROOTFS_MASK[@]}"
		cat "${BASH_SOURCE[0]}"
	} | sha256sum | cut -c1-16
}

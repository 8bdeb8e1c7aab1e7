# shellcheck shell=sh
# execsentry %pre: the group must exist before the files are laid down.
# $1: 1 on install, 2 on upgrade. sysusers.d is the declarative source
# (systemd >= 215); groupadd covers older hosts and hosts without systemd.
if ! getent group execsentry >/dev/null; then
	if command -v systemd-sysusers >/dev/null 2>&1 && [ -f /usr/lib/sysusers.d/execsentry.conf ]; then
		systemd-sysusers execsentry.conf
	else
		groupadd -r execsentry
	fi
fi
exit 0

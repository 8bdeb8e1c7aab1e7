# shellcheck shell=sh
# execsentry %post. $1: 1 on install, 2 on upgrade (the restart on upgrade
# is in %postun, which runs after the old files are gone, as Fedora's
# %systemd_postun_with_restart does).
# Enabling only writes symlinks, so it also works where systemd is
# installed but not running (image builds, chroots); starting needs a
# running systemd. A sensor that cannot start must not fail the rpm
# transaction: the reason is in the journal.
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
	systemctl --no-reload enable execsentry.service >/dev/null 2>&1 || :
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || :
		systemctl start execsentry.service ||
			echo "execsentry: could not start execsentry.service; see: journalctl -u execsentry" >&2
	fi
fi
exit 0

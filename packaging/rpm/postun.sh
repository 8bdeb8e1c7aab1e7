# shellcheck shell=sh
# execsentry %postun. $1: 0 after erase, 1 after upgrade. rpm has no purge:
# an edited %config(noreplace) file is kept as *.rpmsave, local rules in
# /etc/execsentry/rules.d stay, and so do the group and the alert logs.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart execsentry.service >/dev/null 2>&1 || :
	fi
fi
exit 0

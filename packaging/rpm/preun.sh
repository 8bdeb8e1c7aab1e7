# shellcheck shell=sh
# execsentry %preun. $1: 0 on erase, 1 on upgrade. On erase stop and
# disable (while the unit file still exists); on upgrade keep the sensor
# running until %postun restarts it.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
	if [ -d /run/systemd/system ]; then
		systemctl --no-reload disable --now execsentry.service >/dev/null 2>&1 || :
	else
		systemctl --no-reload disable execsentry.service >/dev/null 2>&1 || :
	fi
fi
exit 0

#!/usr/bin/env bash
# Runs the test command given as arguments, then prints what ran and what
# was skipped: libtest's per-binary counts summed, every failed test by
# name, and every skip the tests recorded (tests/common `skip()` appends one
# line per skip to $EXECSENTRY_SKIP_LOG). Exits with the command's status.
#   usage: test-summary.sh cargo test --lib --bins --tests -- --test-threads=2
set -uo pipefail

: "${EXECSENTRY_SKIP_LOG:=$PWD/target/test-skips.log}"
export EXECSENTRY_SKIP_LOG
LOG="${EXECSENTRY_TEST_LOG:-$PWD/target/test-output.log}"
mkdir -p "$(dirname "$EXECSENTRY_SKIP_LOG")" "$(dirname "$LOG")"
rm -f "$EXECSENTRY_SKIP_LOG"

"$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}

# "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out"
read -r passed failed ignored binaries < <(awk '
	/^test result:/ { n++; p += $4; f += $6; i += $8 }
	END { printf "%d %d %d %d\n", p, f, i, n }' "$LOG")
skipped=0
[ -f "$EXECSENTRY_SKIP_LOG" ] && skipped=$(grep -c '^SKIPPED ' "$EXECSENTRY_SKIP_LOG")

echo
echo "==> test summary: $binaries test binaries; $passed passed, $failed failed, $ignored ignored; $skipped passed only by skipping"
grep -E '^test .* \.\.\. FAILED$' "$LOG" | sed 's/^test /    FAILED /; s/ \.\.\. FAILED$//' | sort -u
if [ -f "$EXECSENTRY_SKIP_LOG" ]; then
	sort -u "$EXECSENTRY_SKIP_LOG" | sed 's/^/    /'
fi
if [ "$skipped" -gt 0 ]; then
	echo "    (CI=true or EXECSENTRY_REQUIRE_ALL=1 makes each skip a failure)"
fi
exit "$rc"

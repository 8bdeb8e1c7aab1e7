#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target in fuzz/ for a set time with
# libFuzzer, then folds what it learned back into the committed corpus,
# minimized. Not part of CI (it is time-boxed fuzzing, not a test); the
# corpora and crash inputs it commits are replayed by tests/fuzz_corpus.rs.
#
#   FUZZ_SECONDS=180   seconds per target
#   FUZZ_JOBS=2        targets fuzzed at once (one core each)
#   FUZZ_TARGETS="a b" only these targets (default: all)
#   FUZZ_UPDATE=0      leave fuzz/corpus untouched (default 1: minimize into it)
#   FUZZ_MERGE_ONLY=1  no fuzzing: only re-minimize the committed corpus
#   FUZZ_MAX_FILES=200 corpus files kept per target (the smallest)
#
# A crash leaves its input in fuzz/artifacts/<target>/ and makes the script
# exit 1: commit that file (git add -f, fuzz/artifacts is ignored) and the
# replay test fails until the bug is fixed.
set -euo pipefail

cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-180}
JOBS=${FUZZ_JOBS:-2}
UPDATE=${FUZZ_UPDATE:-1}
# Corpus files: libFuzzer's merge keeps the smallest set covering the
# same edges; this caps what a file may be, so the corpus stays small.
MAX_LEN=${FUZZ_MAX_LEN:-8192}
MAX_FILES=${FUZZ_MAX_FILES:-200}
WORK=fuzz/target/work

# libFuzzer needs nightly (sanitizer flags). Prefer an installed nightly;
# else let stable accept the unstable flags.
if rustup run nightly rustc --version >/dev/null 2>&1; then
	TOOLCHAIN=(+nightly)
else
	echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
	export RUSTC_BOOTSTRAP=1
	TOOLCHAIN=()
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
	cargo install cargo-fuzz --locked
fi

if [ -n "${FUZZ_TARGETS:-}" ]; then
	read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
	mapfile -t TARGETS < <(cargo "${TOOLCHAIN[@]}" fuzz list)
fi

# Build once, then run the binaries: `cargo fuzz run` would rebuild before
# every target, and an edit elsewhere in the tree must not stop a run
# half-way. FUZZ_NO_BUILD=1 reuses the last build.
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
	cargo "${TOOLCHAIN[@]}" fuzz build -O
fi
BIN=fuzz/target/x86_64-unknown-linux-gnu/release
mkdir -p "$WORK"

# One target: fuzz into a scratch corpus seeded from the committed one,
# log the final stats, and report crashes by the files left in artifacts.
run_one() {
	local t=$1 log="$WORK/$t.log"
	rm -rf "${WORK:?}/$t"
	mkdir -p "$WORK/$t" "fuzz/artifacts/$t" "fuzz/corpus/$t"
	cp -a "fuzz/corpus/$t/." "$WORK/$t/"
	local start end rc=0
	start=$(date +%s)
	"$BIN/$t" "$WORK/$t" -artifact_prefix="fuzz/artifacts/$t/" \
		-max_total_time="$SECS" -max_len="$MAX_LEN" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || rc=$?
	end=$(date +%s)
	local execs crashes
	execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
	crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
	echo "fuzz: $t ran $((end - start))s, $execs execs, exit $rc, crash inputs in fuzz/artifacts/$t: $crashes"
	if [ "$rc" -ne 0 ]; then
		grep -m 5 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | sed "s/^/fuzz: $t: /"
	fi
	return "$rc"
}

fail=0
pids=()
names=()
[ "${FUZZ_MERGE_ONLY:-0}" = 1 ] && RUN=() || RUN=("${TARGETS[@]}")
for t in "${RUN[@]}"; do
	run_one "$t" &
	pids+=($!)
	names+=("$t")
	if [ "${#pids[@]}" -ge "$JOBS" ]; then
		wait "${pids[0]}" || fail=1
		pids=("${pids[@]:1}")
		names=("${names[@]:1}")
	fi
done
for p in "${pids[@]}"; do
	wait "$p" || fail=1
done

# Minimize committed + new inputs into the committed corpus: a set-cover
# merge on edges only (not hit counts or compared values, which would keep
# hundreds of near-duplicates), then at most MAX_FILES files, smallest
# first, so the repository stays small.
if [ "$UPDATE" = 1 ]; then
	for t in "${TARGETS[@]}"; do
		rm -rf "${WORK:?}/$t.min"
		mkdir -p "$WORK/$t.min" "$WORK/$t"
		"$BIN/$t" "$WORK/$t.min" "fuzz/corpus/$t" "$WORK/$t" \
			-set_cover_merge=1 -use_counters=0 -use_value_profile=0 \
			-max_len="$MAX_LEN" >"$WORK/$t.merge.log" 2>&1
		find "$WORK/$t.min" -type f -printf '%s %p\n' | sort -n |
			tail -n +"$((MAX_FILES + 1))" | cut -d' ' -f2- | xargs -r rm -f
		rm -rf "fuzz/corpus/$t"
		mv "$WORK/$t.min" "fuzz/corpus/$t"
		echo "fuzz: $t corpus: $(find "fuzz/corpus/$t" -type f | wc -l) files"
	done
	du -sh --apparent-size fuzz/corpus
fi

if [ "$fail" -ne 0 ]; then
	echo "fuzz: FAILED: crash inputs are in fuzz/artifacts/" >&2
	exit 1
fi
echo "fuzz: no crashes"

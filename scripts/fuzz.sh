#!/usr/bin/env bash
# Runs every fuzz target under AFL++ (cargo-afl, stable toolchain) for a
# bounded time and fails if any of them found a crash or a hang.
#   scripts/fuzz.sh            # 30 s per target (what CI runs)
#   scripts/fuzz.sh 3600       # an hour per target
#   scripts/fuzz.sh 600 amf0   # one target
# Findings stay in fuzz/findings/TARGET (crashes/, hangs/, queue/); a crash
# replays with: fuzz/target/debug/TARGET < fuzz/findings/TARGET/default/crashes/FILE
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(rtmp_server rtmp_client rtmp_play rtmp_chunks amf0 flv_tags ts_remux ts_mux stream_id config
    srt_handshake srt_sender srt_receiver record)
fi

# Per-input time budget in ms: an input that takes longer is a hang, and a
# hang fails the run. The SRT connection targets are held to a budget a
# peer's datagrams must never exceed (one NAK once cost 3 s of CPU per
# range); the others keep AFL++'s calibrated default.
budget() {
  case "$1" in
    srt_sender|srt_receiver) echo "-t 500" ;;
    *) echo "" ;;
  esac
}

command -v cargo-afl >/dev/null 2>&1 || cargo install cargo-afl --locked
cargo afl build --bins 2>&1 | tail -1
cargo run --quiet --bin write_seeds 2>/dev/null || cargo afl run --quiet --bin write_seeds

# No UI, no CPU binding or core_pattern requirements on shared machines. A
# seed that crashes or overruns its time budget stops the run (AFL++ would
# otherwise skip it quietly), so a regression on a seed fails too.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
  AFL_NO_AFFINITY=1 AFL_QUIET=1 AFL_EXIT_ON_SEED_ISSUES=1
failed=0
for target in "${targets[@]}"; do
  rm -rf "findings/$target"; mkdir -p findings
  # shellcheck disable=SC2046
  cargo afl fuzz -V "$seconds" $(budget "$target") -i "corpus/$target" -o "findings/$target" \
    "target/debug/$target" >"findings-$target.log" 2>&1 || true
  stats="findings/$target/default/fuzzer_stats"
  if [ ! -f "$stats" ]; then
    echo "fuzz: $target did not run:"; tail -20 "findings-$target.log"; failed=1; continue
  fi
  execs=$(awk -F' *: *' '$1=="execs_done"{print $2}' "$stats")
  crashes=$(awk -F' *: *' '$1=="saved_crashes"{print $2}' "$stats")
  hangs=$(awk -F' *: *' '$1=="saved_hangs"{print $2}' "$stats")
  echo "fuzz: $target: $execs runs in ${seconds}s, $crashes crashes, $hangs hangs"
  if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then failed=1; fi
  rm -f "findings-$target.log"
done
exit $failed

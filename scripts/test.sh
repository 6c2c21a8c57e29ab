#!/usr/bin/env bash
# Runs Prism's whole test suite (unit, property and end-to-end tests).
# The end-to-end tests drive real ffmpeg/ffprobe, srt-live-transmit,
# nginx-rtmp, headless Chromium and PyAV (FFmpeg 8), and check the metrics
# with promtool;
# this installs them first when they are
# missing (Debian/Ubuntu, as root or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v srt-live-transmit >/dev/null 2>&1 || missing+=(srt-tools)
[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || missing+=(nginx libnginx-mod-rtmp)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# `ss` reads the SRT listener's socket buffer.
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
# The console test drives Debian's Chromium through chromedriver.
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || missing+=(chromium chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${missing[*]} with apt-get" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The multitrack test's modern peer: FFmpeg 8's FLV muxer, RTMP client and
# RTMP server, as PyAV ships them (Debian's ffmpeg is too old for enhanced
# RTMP v2 multitrack).
pyav_8='import av, sys; sys.exit(int(av.ffmpeg_version_info.lstrip("n").split(".")[0]) < 8)'
if ! python3 -c "$pyav_8" >/dev/null 2>&1; then
  command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1 || {
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 python3-pip
  }
  echo "scripts/test.sh: installing PyAV with pip" >&2
  python3 -m pip install --quiet "av>=18" || python3 -m pip install --quiet --break-system-packages "av>=18"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

# One closing line over every test binary, so the total is not lost among
# the per-binary summaries (the last of which is often an empty doc-test run).
awk '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "prism: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"

#!/usr/bin/env bash
# Runs Prism's whole test suite (unit, property and end-to-end tests).
# The end-to-end tests drive real ffmpeg/ffprobe; this installs them first
# when they are missing (Debian/Ubuntu, as root or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  echo "scripts/test.sh: ffmpeg is missing; installing it with apt-get" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq ffmpeg
fi

cargo test --workspace --locked "$@"

#!/usr/bin/env bash
# The detection benchmark: the whole suite (about 15 minutes on 2 cores), or, with
# ORACLE_ONLY=1, just the error-rate scenarios of each fleet shape.
set -euo pipefail
out=${OUT:-/tmp/immune-bench}
mkdir -p "$out"
bin=${BIN:-target/release/immune}
if [ "${ORACLE_ONLY:-0}" = 1 ]; then
  er=error-rate:1.2,error-rate:1.5,error-rate:2,error-rate:5
  "$bin" bench detect --hosts 40 --canary 2 --scenarios "$er" --seeds 50 --out "$out/er-40-2.json"
  "$bin" bench detect --hosts 10 --canary 2 --scenarios "$er" --seeds 25 --out "$out/er-10-2.json"
  "$bin" bench detect --hosts 200 --canary 2 --scenarios "$er" --seeds 25 --out "$out/er-200-2.json"
  "$bin" bench detect --hosts 40 --canary 4 --scenarios "$er" --seeds 25 --out "$out/er-40-4.json"
else
  "$bin" bench detect --out "$out/detect.json"
fi

#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with only the Rust toolchain:
#   1. installs the real services the integration tests talk to (MariaDB, memcached,
#      Prometheus, Alertmanager) from Debian's packages, skipping what is already there;
#   2. starts each on a free loopback port in a temporary directory and exports where
#      (IMMUNE_TEST_MYSQL_ADDR, IMMUNE_TEST_MEMCACHED_ADDR, IMMUNE_TEST_PROMETHEUS_BIN,
#      IMMUNE_TEST_ALERTMANAGER_BIN, IMMUNE_TEST_CHROMIUM_BIN); tests that need a service
#      read these, and with IMMUNE_TEST_REQUIRE_SERVICES=1 (exported below) a test whose
#      variable is unset fails instead of skipping, so a broken install cannot turn green;
#   3. runs fmt, clippy and `cargo test --release`, then stops what it started.
# Idempotent: run it as often as you like. Set IMMUNE_TEST_NO_INSTALL=1 to skip apt.
set -euo pipefail
cd "$(dirname "$0")/.."

need_install=()
command -v mariadbd >/dev/null 2>&1 || need_install+=(mariadb-server)
command -v memcached >/dev/null 2>&1 || need_install+=(memcached)
command -v prometheus >/dev/null 2>&1 || need_install+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_install+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need_install+=(chromium)
if [ ${#need_install[@]} -gt 0 ] && [ -z "${IMMUNE_TEST_NO_INSTALL:-}" ]; then
  echo "test.sh: installing ${need_install[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # Debian's postinst scripts try to start services; there is no init here, so let them fail quietly.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get install -y -qq --no-install-recommends "${need_install[@]}" >/dev/null
fi

tmp=$(mktemp -d /tmp/immune-test.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.2; done; echo "test.sh: port $1 never opened" >&2; return 1; }

if command -v mariadbd >/dev/null 2>&1; then
  port=$(free_port)
  mariadb-install-db --datadir="$tmp/mysql" --user=root >"$tmp/mysql-install.log" 2>&1
  mariadbd --datadir="$tmp/mysql" --port="$port" --socket="$tmp/mysql/sock" --bind-address=127.0.0.1 \
    --user=root >"$tmp/mysql.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
  mariadb --socket="$tmp/mysql/sock" -uroot -e "CREATE USER IF NOT EXISTS 'immune'@'127.0.0.1' IDENTIFIED BY 'immune'; GRANT ALL ON *.* TO 'immune'@'127.0.0.1'; CREATE DATABASE IF NOT EXISTS shop;" 
  export IMMUNE_TEST_MYSQL_ADDR="127.0.0.1:$port" IMMUNE_TEST_MYSQL_PID="${pids[-1]}"
  export IMMUNE_TEST_MYSQL_URL="mysql://immune:immune@127.0.0.1:$port/shop"
fi
if command -v memcached >/dev/null 2>&1; then
  port=$(free_port)
  memcached -u root -p "$port" -l 127.0.0.1 >"$tmp/memcached.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
  export IMMUNE_TEST_MEMCACHED_ADDR="127.0.0.1:$port" IMMUNE_TEST_MEMCACHED_PID="${pids[-1]}"
fi
# Prometheus and Alertmanager are started by the tests themselves (they need immune's
# address in their configuration); the tests get the binaries' paths.
command -v prometheus >/dev/null 2>&1 && export IMMUNE_TEST_PROMETHEUS_BIN="$(command -v prometheus)"
command -v promtool >/dev/null 2>&1 && export IMMUNE_TEST_PROMTOOL_BIN="$(command -v promtool)"
command -v prometheus-alertmanager >/dev/null 2>&1 && export IMMUNE_TEST_ALERTMANAGER_BIN="$(command -v prometheus-alertmanager)"
command -v chromium >/dev/null 2>&1 && export IMMUNE_TEST_CHROMIUM_BIN="$(command -v chromium)"
# Every service above is required: a test whose variable is unset fails, it does not skip.
export IMMUNE_TEST_REQUIRE_SERVICES=1

cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release

#!/usr/bin/env bash
# Installs what the tests need (the package with its test extras, redis-server, chromium,
# openssl, curl, h2load, logrotate, mariadb-server, haproxy, iproute2) and runs them under coverage; prints the coverage figure
# and fails below the floor (COVERAGE_MIN).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"  # the WebSocket chat test
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"  # TLS: test certificates
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v h2load >/dev/null 2>&1 || missing="$missing nghttp2-client"  # HTTP/2 load
command -v logrotate >/dev/null 2>&1 || missing="$missing logrotate"  # log reopening
command -v mariadbd >/dev/null 2>&1 || missing="$missing mariadb-server"  # the MySQL client
command -v haproxy >/dev/null 2>&1 || missing="$missing haproxy"  # PROXY protocol, several nodes
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"  # network namespaces (several nodes)
command -v redis-cli >/dev/null 2>&1 || missing="$missing redis-tools"  # Redis Cluster creation
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi
python3 -m pip install -q -e '.[test]'
python3 -m coverage erase
python3 -m coverage run -m pytest -q "$@"
python3 -m coverage combine -q  # the twistd processes the tests ran are measured too
# 93% when the floor was set; one point of slack for workers a test kills before they write.
python3 -m coverage report --fail-under="${COVERAGE_MIN:-92}" | tail -1

#!/usr/bin/env bash
# Makes sure the real services the tests start exist; installs them with apt-get when root.
# Usage: scripts/ensure-system-packages.sh   (reads the list below)
set -euo pipefail

# command -> Debian package
declare -A needed=(
  [redis-server]=redis-server
  [haproxy]=haproxy
  [initdb]=postgresql
  [chromium]=chromium
  [node]=nodejs  # graphql-http's audits and the other reference clients (tests/js)
  [npm]=npm
)

have() {
  case "$1" in
    initdb) command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 ;;
    chromium) [ -x /usr/bin/chromium ] ;;  # the browser tests launch this exact path
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] ;;
  esac
}

missing=()
for cmd in "${!needed[@]}"; do
  have "$cmd" || missing+=("${needed[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "Missing system packages: ${missing[*]}" >&2
  echo "Install them (e.g. 'sudo apt-get install -y ${missing[*]}') and run this again." >&2
  exit 1
fi
echo "Installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged services; the tests start their own on free ports.
for svc in redis-server haproxy postgresql; do
  (command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1) || true
done

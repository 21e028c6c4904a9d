#!/bin/sh
# Reload nginx when the replicas behind a name change, so scaling or recreating them needs no
# manual `nginx -s reload` (docker-compose.yml mounts this into the nginx image's
# /docker-entrypoint.d/, which runs it before nginx starts).
#
# nginx resolves `server web:8000` once, at start or reload. Open-source nginx before 1.27.3
# cannot re-resolve an upstream by itself, and a `resolver` with a variable in proxy_pass would
# give up the upstream's shared failure state. So: ask Docker's DNS every
# NGINX_FOLLOW_SECONDS (2) for NGINX_FOLLOW_HOST's addresses, and reload when the set differs
# from the last one nginx loaded. An empty answer (every replica stopped) is remembered but not
# loaded (nginx would refuse a config whose upstream does not resolve); the replicas' return is
# then a change, and the reload also clears the failures nginx noted while they were away.
set -eu
host=${NGINX_FOLLOW_HOST:-}
[ -n "$host" ] || exit 0
interval=${NGINX_FOLLOW_SECONDS:-2}

addresses() {
  getent ahosts "$host" 2>/dev/null | awk '{ print $1 }' | sort -u | tr '\n' ' ' || true
}

echo "$0: reloading nginx whenever the addresses of '$host' change (checked every ${interval}s)"
(
  loaded=$(addresses)
  while sleep "$interval"; do
    now=$(addresses)
    if [ "$now" = "$loaded" ]; then
      continue
    elif [ -z "$now" ]; then
      echo "$0: '$host' resolves to nothing; nginx keeps $loaded"
      loaded=""
    elif nginx -t -q && nginx -s reload; then
      echo "$0: '$host' is now $now(was ${loaded:-nothing}): nginx reloaded"
      loaded=$now
    fi
  done
) </dev/null &

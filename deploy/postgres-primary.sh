#!/bin/bash
# The primary of docker-compose.failover.yml: run once by the postgres image's entrypoint when it
# creates the cluster, as user postgres, against the temporary server (the official image runs an
# executable script, the stand-in sources it: plain psql works for both).
#
# The standby may stream from it (a replication line in pg_hba.conf, password-checked like every
# other connection), and from the real server's start on no commit is answered before the standby
# `standby` has it. Set here, not on the command line: the official entrypoint passes the command
# line to its temporary server too, whose commits would then wait for a standby that cannot exist yet.
set -e
printf 'host replication %s all %s\n' "$POSTGRES_USER" "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >> "$PGDATA/pg_hba.conf"
PGPASSWORD="$POSTGRES_PASSWORD" psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" \
  --dbname "${POSTGRES_DB:-$POSTGRES_USER}" -c "ALTER SYSTEM SET synchronous_standby_names = 'standby'"

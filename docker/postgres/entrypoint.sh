#!/bin/sh
# First start: a cluster in $PGDATA with the official image's variables; then the server.
set -eu
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        echo "error: set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    pw="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pw"
    initdb --username="$user" --pwfile="$pw" --auth-local=trust --auth-host="$auth" \
        --encoding=UTF8 >/dev/null
    rm -f "$pw"
    printf "host all all all %s\n" "$auth" >> "$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        pg_ctl -w -o "-c listen_addresses=''" start >/dev/null
        psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -q -c "CREATE DATABASE \"$db\""
        pg_ctl -w stop >/dev/null
    fi
fi
if [ "${1:-}" = postgres ]; then
    shift
    exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"

#!/bin/sh
# A streaming read replica: on the first start, copy the primary with pg_basebackup (-R
# writes standby.signal and the connection settings), then run PostgreSQL as a hot standby.
set -eu
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    until su-exec postgres env PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup \
            --host="$PRIMARY_HOST" --username=replicator --pgdata="$PGDATA" \
            --wal-method=stream --write-recovery-conf --progress; do
        echo "waiting for the primary at $PRIMARY_HOST" >&2
        rm -rf "${PGDATA:?}"/*
        sleep 2
    done
fi
exec su-exec postgres postgres -D "$PGDATA" -c hot_standby=on -c hot_standby_feedback=on

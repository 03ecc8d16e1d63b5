# Throwaway services for the test suite, on loopback only. Sourced by scripts/test.sh.

SERVICES_DIR="$(mktemp -d /tmp/watchpost-services.XXXXXX)"
PG_BIN=""
PG_DATA=""
PG_AS=()

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_postgres() {
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL server binaries not found" >&2; exit 1; }
  PG_DATA="$SERVICES_DIR/pg"
  mkdir -p "$PG_DATA"
  # PostgreSQL refuses to run as root; use the postgres system account then.
  if [ "$(id -u)" -eq 0 ]; then
    chown -R postgres: "$SERVICES_DIR"
    chmod 755 "$SERVICES_DIR"
    PG_AS=(runuser -u postgres --)
  fi
  local port; port="$(free_port)"
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U watchpost --no-sync >/dev/null
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$SERVICES_DIR/pg.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $SERVICES_DIR -c fsync=off -c max_connections=400" start >/dev/null
  export WATCHPOST_TEST_DATABASE_URL="postgres://watchpost@127.0.0.1:$port/postgres"
  echo "==> PostgreSQL on 127.0.0.1:$port"
}

wait_for_port() { # wait_for_port <port> <name>
  for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not start on port $1" >&2; exit 1
}

# An S3-compatible server (s3s-fs) that checks SigV4 signatures and expiry.
start_s3() {
  local port; port="$(free_port)"
  local dir="$SERVICES_DIR/s3"
  mkdir -p "$dir"
  local bin; bin="$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")"
  "$bin" --host 127.0.0.1 --port "$port" --access-key watchpost-test --secret-key watchpost-test-secret "$dir" \
    >"$SERVICES_DIR/s3.log" 2>&1 &
  echo $! >"$SERVICES_DIR/s3.pid"
  wait_for_port "$port" s3s-fs
  export WATCHPOST_TEST_S3_ENDPOINT=127.0.0.1 WATCHPOST_TEST_S3_PORT="$port"
  export WATCHPOST_TEST_S3_ACCESS_KEY=watchpost-test WATCHPOST_TEST_S3_SECRET_KEY=watchpost-test-secret
  echo "==> s3s-fs on 127.0.0.1:$port"
}

stop_services() {
  local rc=$?
  if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
  fi
  for pidfile in "$SERVICES_DIR"/*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$SERVICES_DIR"
  return $rc
}

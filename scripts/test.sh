#!/usr/bin/env bash
# Sets up whatever is missing, starts the throwaway servers the tests need (PostgreSQL on
# loopback), and runs every test. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
bash scripts/setup.sh test
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/watchpost/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

source scripts/lib/services.sh
trap stop_services EXIT

if [ -z "${WATCHPOST_TEST_DATABASE_URL:-}" ]; then
  start_postgres
fi
if [ -z "${WATCHPOST_TEST_S3_ENDPOINT:-}" ]; then
  start_s3
fi

echo "==> building (release binary for the zero-config start test)"
cargo build --release --locked --bin watchpost
export WATCHPOST_RELEASE_BIN="$CARGO_TARGET_DIR/release/watchpost"

echo "==> the server builds without GStreamer (cargo feature recording off)"
cargo check --locked --no-default-features -p watchpost

echo "==> tests"
cargo test --workspace --locked --all-targets --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"

echo "==> the forwarding micro-benchmark, once (it needs the media crate's sim feature)"
cargo test --locked -p watchpost-media --features sim --bench forward

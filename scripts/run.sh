#!/usr/bin/env bash
# Sets up whatever is missing, then runs Watchpost on its embedded defaults
# (SQLite + local object store under ./data) at http://localhost:${PORT:-3000}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/watchpost/target}"
cargo build --release --locked --bin watchpost
exec "$CARGO_TARGET_DIR/release/watchpost" serve

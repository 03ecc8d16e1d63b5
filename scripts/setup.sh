#!/usr/bin/env bash
# Installs whatever Watchpost needs that is missing on a Debian/Ubuntu machine.
#   scripts/setup.sh run    - what the server needs to build and run
#   scripts/setup.sh test   - plus what the test suite needs (PostgreSQL, Chromium, Node, ...)
#   scripts/setup.sh bench  - run, plus what the SFU load benchmark needs (Janus, ...)
# Safe to run repeatedly: it only installs what is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-run}"

log() { printf '==> %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null && SUDO="sudo" || true
fi

need_pkgs=()
want() { # want <command-or-file> <debian package>
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -e "$1" ]; then need_pkgs+=("$2"); fi
}

want cc build-essential
want pkg-config pkg-config
want curl curl
# The recorder (cargo feature `recording`, on by default): GStreamer with the muxers
# (matroska, mp4), splitmuxsink, the Opus and H.264 parsers.
want_deb() { # want_deb <debian package>: installed unless dpkg already has it
  if command -v dpkg >/dev/null 2>&1 && ! dpkg -s "$1" >/dev/null 2>&1; then need_pkgs+=("$1"); fi
}
for pkg in libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base \
           gstreamer1.0-plugins-good gstreamer1.0-plugins-bad; do
  want_deb "$pkg"
done
if [ "$MODE" = "test" ]; then
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then need_pkgs+=(postgresql); fi
  want chromium chromium
  want chromedriver chromium-driver
  # The web app's Firefox test (WebDriver BiDi through puppeteer-core).
  want firefox-esr firefox-esr
  want node nodejs
  want npm npm
  want python3 python3
  want turnserver coturn
  # The generated API tests' venv (Debian's python3 needs it for `python3 -m venv`).
  if ! python3 -c 'import ensurepip' 2>/dev/null; then want_deb python3-venv; fi
  # Recording tests encode real VP8/Opus and check the segments with ffprobe.
  want ffprobe ffmpeg
fi
if [ "$MODE" = "bench" ]; then
  # benches/sfu_load: Janus side by side (Debian's 1.1 package), the veth it listens on,
  # and the font its chart's labels are drawn with.
  want janus janus
  want ip iproute2
  want /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf fonts-dejavu-core
fi

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    log "missing packages (${need_pkgs[*]}) and no apt-get: install them by hand"; exit 1
  fi
  log "installing: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    log "no Rust toolchain found: install rustup (https://rustup.rs) and re-run"; exit 1
  fi
fi

if [ "$MODE" = "test" ]; then
  # Node packages for the client-compatibility and browser tests (exact versions, lockfile).
  if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
    log "installing Node test packages"
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
  fi
  # S3-compatible test server that verifies SigV4 signatures and expiry.
  if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
    log "installing s3s-fs 0.14.1 (S3 test server)"
    cargo install s3s-fs --version 0.14.1 --locked --features binary
  fi
  # schemathesis for the generated API tests (tests/api_schema.rs), pinned, in its own venv.
  SCHEMATHESIS_VERSION=4.32.5
  SCHEMATHESIS_VENV="$HOME/.cache/watchpost/venv"
  if [ "$("$SCHEMATHESIS_VENV/bin/schemathesis" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV"
    [ -x "$SCHEMATHESIS_VENV/bin/python" ] || python3 -m venv "$SCHEMATHESIS_VENV"
    "$SCHEMATHESIS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  # OpenAPI 3.1 validator for the spec test.
  if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
    log "installing openapi-spec-validator"
    python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator 2>/dev/null \
      || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages openapi-spec-validator
  fi
fi

#!/usr/bin/env bash
# Installs what the test suites need on a fresh Debian/Ubuntu machine, then runs every
# check CI runs: formatting, lints, the firmware's microcontroller build, and all tests.
# The Rust test run comes last so its summary is the last thing printed.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/storesync/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Incremental caches help no fresh clone and grow the shared target directory by gigabytes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "==> installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# PostgreSQL server binaries for the throw-away clusters the hub tests start; Chromium for
# the browser suite (driven by playwright-core, which never downloads a browser); WebKitGTK
# for the desktop app, and an X server and a screenshot tool for its end-to-end test.
apt_install postgresql chromium libwebkit2gtk-4.1-dev xvfb imagemagick
command -v npm >/dev/null || apt_install nodejs npm

# The web UI first: the hub serves it and the desktop crate embeds desktop-app/ui/dist.
echo "==> web UI: npm ci, typecheck, vite build"
npm --prefix desktop-app/ui ci --no-audit --no-fund --loglevel=error
npm --prefix desktop-app/ui run build   # tsc --noEmit, then vite build into dist/

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "==> protocol builds without std"
cargo build --locked -p storesync-protocol --no-default-features

echo "==> firmware bridge builds for a Cortex-M target (no std)"
rustup target add thumbv7em-none-eabihf >/dev/null
cargo build --locked -p storesync-bridge --lib --target thumbv7em-none-eabihf

echo "==> web UI in Chromium against a real hub and agents"
cargo build --locked -p storesync-hub -p storesync-edge -p storesync-sim
npm --prefix desktop-app/ui run e2e

echo "==> desktop app under Xvfb"
cargo test --locked -p storesync-tests --test desktop -- --nocapture

echo "==> cargo test"
cargo test --locked --workspace

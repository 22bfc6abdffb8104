#!/usr/bin/env bash
# CI on this machine (.ci/run): one release build, the .deb made from it without a second
# build (cargo deb --no-build), the release tarball, then a smoke test of each
# (packaging/smoke.sh). Installs cargo-deb when it is missing.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
DIST="$TARGET_DIR/dist"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "packaging: installing cargo-deb" >&2
    cargo install cargo-deb --locked
fi
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }

started=$SECONDS
cargo build --release --locked
mkdir -p "$DIST"
DEB="$(cargo deb --no-build --output "$DIST" | tail -n 1)"
TARBALL="$(bash packaging/tarball.sh)"
echo "packaging: built $DEB and $TARBALL in $((SECONDS - started)) s" >&2

bash packaging/smoke.sh tarball "$TARBALL"
bash packaging/smoke.sh deb "$DEB"

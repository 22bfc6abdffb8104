#!/usr/bin/env bash
# Release tarball: gatewayd-VERSION-TARGET.tar.gz holding one directory with the binary,
# the systemd unit and socket, the example config and config/examples/, README.md,
# LICENSE and CHANGELOG.md; beside it gatewayd-VERSION-TARGET.tar.gz.sha256
# (`sha256sum -c` format). Prints the tarball's path.
#
#   bash packaging/tarball.sh [BINARY [TARGET [OUT_DIR]]]
#
# BINARY   default ${CARGO_TARGET_DIR:-target}/release/gatewayd (built beforehand)
# TARGET   the target triple in the name; default the host's (rustc -vV)
# OUT_DIR  default ${CARGO_TARGET_DIR:-target}/dist
# File times are the last commit's (or SOURCE_DATE_EPOCH), so the same inputs give the
# same bytes.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
BINARY="${1:-$TARGET_DIR/release/gatewayd}"
TARGET="${2:-$(rustc -vV | sed -n 's/^host: //p')}"
OUT_DIR="${3:-$TARGET_DIR/dist}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"

if [ ! -x "$BINARY" ]; then
    echo "tarball: no executable at $BINARY (run cargo build --release first)" >&2
    exit 1
fi

NAME="gatewayd-$VERSION-$TARGET"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
DIR="$STAGE/$NAME"
mkdir -p "$DIR/examples"
install -m 0755 "$BINARY" "$DIR/gatewayd"
# Symbols off, as in the .deb (cargo-deb strips too): about 27 MB down to 22 MB. STRIP
# names the target's strip for a cross build (aarch64-linux-gnu-strip).
"${STRIP:-strip}" --strip-unneeded "$DIR/gatewayd" \
    || echo "tarball: ${STRIP:-strip} failed; the binary keeps its symbols" >&2
install -m 0644 config/gatewayd.service config/gatewayd.socket config/gatewayd.example.toml \
    README.md LICENSE CHANGELOG.md "$DIR/"
install -m 0644 config/examples/*.toml "$DIR/examples/"

mkdir -p "$OUT_DIR"
TARBALL="$OUT_DIR/$NAME.tar.gz"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" \
    -C "$STAGE" -cf - "$NAME" | gzip -n -9 > "$TARBALL"
(cd "$OUT_DIR" && sha256sum "$NAME.tar.gz" > "$NAME.tar.gz.sha256")
echo "$TARBALL"

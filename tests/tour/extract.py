"""Turns the README's tour into two scripts for tests/tour/run.sh (which documents the
markers): server.sh (the one `<!-- tour: server -->` block) and client.sh (every other
block that is not skipped, in order; a `<!-- tour: file NAME -->` block becomes a write
of NAME at its place).

usage: extract.py README.md OUT_DIR

Fails on a sh, python or js block without a known marker or run as-is, so a new block
is either run or skipped on purpose.
"""
import re
import sys

RUNNABLE = {"sh", "bash", "console"}
FILE_KINDS = {"python", "py", "js", "javascript", "mjs"}
MARKER = re.compile(r"^<!--\s*tour:\s*(server|skip|file)\b\s*(.*?)\s*-->$")


def blocks(text):
    """Yields (line number, info string, marker or None, body) for each fenced block."""
    lines = text.splitlines()
    i = 0
    marker = None
    while i < len(lines):
        line = lines[i]
        found = MARKER.match(line.strip())
        if found:
            marker = (found.group(1), found.group(2))
        elif line.startswith("```"):
            info = line[3:].strip().split()
            kind = info[0] if info else ""
            start = i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            yield start, kind, marker, "\n".join(lines[start:i]) + "\n"
            marker = None
        elif line.strip():
            marker = None
        i += 1


def main():
    readme, out = sys.argv[1], sys.argv[2]
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    server = []
    client = []
    for line, kind, marker, body in blocks(text):
        what = marker[0] if marker else None
        if what == "skip":
            continue
        if what == "server":
            server.append(body)
        elif what == "file":
            name = marker[1]
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                sys.exit(f"{readme}:{line}: bad file name {name!r}")
            client.append(f"cat > {name} <<'TOUR_EOF'\n{body}TOUR_EOF\n")
        elif kind in RUNNABLE:
            client.append(f"echo '+ README.md:{line}' >&2\n{body}")
        elif kind in FILE_KINDS:
            sys.exit(f"{readme}:{line}: a {kind} block needs <!-- tour: file NAME --> or <!-- tour: skip -->")
        # Other blocks (toml, text, output) are shown, not run.
    if len(server) != 1:
        sys.exit(f"{readme}: expected one <!-- tour: server --> block, found {len(server)}")
    with open(f"{out}/server.sh", "w", encoding="utf-8") as f:
        f.write(server[0])
    with open(f"{out}/client.sh", "w", encoding="utf-8") as f:
        f.write("".join(client))


main()

"""Runs $GATEWAYD_WRAPPED_BIN (with this program's arguments) under the parts of
config/gatewayd.service that could break gatewayd, without systemd:

- SystemCallFilter=@system-service and ~@privileged @resources, SystemCallErrorNumber=EPERM,
  SystemCallArchitectures=native: a seccomp filter built from the very groups
  `systemd-analyze syscall-filter` prints (libseccomp, Debian package python3-seccomp);
- ProtectProc=invisible and ProcSubset=pid: a private mount namespace with /proc mounted
  hidepid=invisible,subset=pid (no /proc/meminfo, /proc/sys, ...).

The process id is kept (exec), so signals and sd_notify checks see gatewayd itself.
Needs root (the mount) and Linux 5.8 or newer (subset=pid).
"""
import ctypes
import os
import subprocess
import sys

import seccomp


def syscall_groups():
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True
    ).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.split()[0]
            groups[current] = []
        elif current and line.strip() and not line.strip().startswith("#"):
            groups[current] += line.split()
    return groups


GROUPS = syscall_groups()


def expand(name):
    calls = set()
    for entry in GROUPS.get(name, []):
        calls |= expand(entry) if entry.startswith("@") else {entry}
    return calls


def private_proc():
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private = 0x00020000, 1 << 14, 1 << 18
    if libc.unshare(clone_newns) != 0:
        sys.exit(f"sandbox: unshare: {os.strerror(ctypes.get_errno())}")
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        sys.exit(f"sandbox: mount --make-rprivate /: {os.strerror(ctypes.get_errno())}")
    if libc.mount(b"proc", b"/proc", b"proc", 0, b"hidepid=invisible,subset=pid") != 0:
        sys.exit(f"sandbox: mount proc: {os.strerror(ctypes.get_errno())}")


def main():
    allowed = expand("@system-service") - expand("@privileged") - expand("@resources")
    # For checking that the sandbox bites: SANDBOX_DENY="accept4 accept" must break gatewayd.
    allowed -= set(os.environ.get("SANDBOX_DENY", "").split())
    private_proc()
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(1))  # EPERM
    for name in sorted(allowed):
        try:
            rules.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # a name this architecture does not have
    rules.load()
    program = os.environ["GATEWAYD_WRAPPED_BIN"]
    os.execv(program, [program] + sys.argv[1:])


main()

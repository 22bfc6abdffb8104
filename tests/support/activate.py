"""Acts as systemd socket activation for tests: bind a socket, pass it as fd 3, exec gatewayd.

usage: activate.py tcp HOST PORT -- gatewayd ARGS...
       activate.py unix PATH -- gatewayd ARGS...
The process keeps its pid across exec, so LISTEN_PID matches, as under systemd.
"""
import os
import socket
import sys

kind = sys.argv[1]
sep = sys.argv.index("--")
if kind == "tcp":
    host, port = sys.argv[2], int(sys.argv[3])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
else:
    path = sys.argv[2]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
sock.listen(128)
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
argv = sys.argv[sep + 1:]
os.execv(argv[0], argv)

"""ckpt_callbacks: checkpoint callbacks for Python programs that ckpt checkpoints.

    import ckpt_callbacks

    def prepare(req):                 # ckpt is about to checkpoint this process
        log.flush()
        db.close()                    # a connection to a service outside the checkpoint
        if busy:
            req.veto("in the middle of a transaction")

    def resume(event, detail):        # "continue", "restart" or "failed"
        if event != "failed":
            db.connect()

    ckpt_callbacks.register(prepare, resume)

A daemon thread listens on a unix socket with an abstract name starting with "ckpt-callbacks/",
which is how ckpt finds the process, and answers ckpt only when it runs as root or as this user
(SO_PEERCRED). Between prepare and resume the process runs on: it is frozen only for the dump
itself. The wire protocol is in PROTOCOL.md.
"""

import os
import socket
import struct
import threading

PREFIX = "ckpt-callbacks/"

_registered = None


class Request:
    """A checkpoint being prepared (valid until prepare returns)."""

    def __init__(self, conn, will_exit):
        self._conn = conn
        self.will_exit = will_exit  # the process is killed once the checkpoint is made
        self.vetoed = False

    def _send(self, line):
        self._conn.sendall((line + "\n").encode())

    def exclude(self, start, length):
        """Memory the image need not hold: [start, start+length), page-aligned; back zeroed."""
        if start % 4096 or length % 4096 or length <= 0:
            raise ValueError("exclude: page-aligned start and length")
        self._send("EXCLUDE %x %x" % (start, start + length))

    def take_over(self, fd):
        """An fd this process re-establishes itself after a restart (/dev/null until then)."""
        self._send("TAKEOVER %d" % fd)

    def delay(self, ms):
        """More time: the checkpoint waits ms more for prepare (bounded by ckpt)."""
        self._send("DELAY %d" % max(0, int(ms)))

    def veto(self, reason):
        """Refuses this checkpoint; resume is not called for it."""
        self.vetoed = True
        self._send("VETO " + str(reason).replace("\n", " "))


def _trusted(conn):
    try:
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return False
    return uid == 0 or uid == os.getuid()


def _lines(conn):
    buf = b""
    while True:
        try:
            data = conn.recv(4096)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode(errors="replace")


def _serve(conn, prepare, resume):
    with conn:
        for line in _lines(conn):
            words = line.strip().split(" ")
            if words[0] == "PREPARE":
                req = Request(conn, " exit " in line)
                if prepare:
                    prepare(req)
                if req.vetoed:
                    return
                conn.sendall(b"READY\n")
            elif words[0] == "RESUME":
                kind = words[2] if len(words) > 2 else "continue"
                event = kind if kind in ("restart", "failed") else "continue"
                if resume:
                    resume(event, " ".join(words[3:]) if event == "failed" else "")
                conn.sendall(b"DONE\n")
                return


def register(prepare=None, resume=None):
    """Starts listening for ckpt; returns the abstract socket name (without its NUL)."""
    global _registered
    if _registered:
        raise RuntimeError("ckpt callbacks are registered already")
    name = "%s%d-%s" % (PREFIX, os.getpid(), os.urandom(4).hex())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0" + name)
    sock.listen(4)

    def loop():
        while True:
            try:
                conn, _ = sock.accept()
            except InterruptedError:
                continue
            except OSError:
                return
            if not _trusted(conn):
                conn.close()
                continue
            _serve(conn, prepare, resume)

    threading.Thread(target=loop, name="ckpt-callbacks", daemon=True).start()
    _registered = name
    return name

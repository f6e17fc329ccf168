# Python workload for scripts/bench.mjs (a real program: the python3 interpreter with a big heap).
#   python3 holder.py MIB
# Fills a bytearray of MIB MiB with random bytes (every page different), keeps its SHA-256, prints
# "ready", then wakes every millisecond and keeps the longest gap between two wake-ups beyond the
# millisecond asked for (as scripts/bench/stall.c does).
#   SIGUSR1: prints "maxstall USEC" (the longest gap since the last report) and starts over
#   SIGUSR2: hashes the buffer again and prints "verify ok" or "verify bad" (the time the hash
#            takes is not counted as a gap)
import hashlib
import os
import signal
import sys
import time

size = int(sys.argv[1]) << 20
buf = bytearray(size)
view = memoryview(buf)
step = 1 << 20
for off in range(0, size, step):
    view[off : off + step] = os.urandom(min(step, size - off))
digest = hashlib.sha256(buf).digest()

flags = {"report": False, "verify": False}


def on_usr1(sig, frame):
    flags["report"] = True


def on_usr2(sig, frame):
    flags["verify"] = True


signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGUSR2, on_usr2)
print("ready", flush=True)

maxgap = 0.0
last = time.monotonic()
while True:
    time.sleep(0.001)
    t = time.monotonic()
    gap = t - last - 0.001
    if gap > maxgap:
        maxgap = gap
    last = t
    if flags["report"]:
        flags["report"] = False
        print("maxstall %d" % int(maxgap * 1e6), flush=True)
        maxgap = 0.0
    if flags["verify"]:
        flags["verify"] = False
        ok = hashlib.sha256(buf).digest() == digest
        print("verify ok" if ok else "verify bad", flush=True)
        last = time.monotonic()

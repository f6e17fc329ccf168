"""tcpcopy.py: the bench's nc-style reference for the page server, over the same link.

  tcpcopy.py recv ADDR FILE     listens on ADDR:0, prints its port, writes what one connection
                                sends into FILE (through the page cache, as the page server does),
                                then answers "done" and exits
  tcpcopy.py send ADDR PORT FILE sends FILE (sendfile), waits for "done", prints the wall ms
"""
import os
import socket
import sys
import time

if sys.argv[1] == "recv":
    srv = socket.socket()
    srv.bind((sys.argv[2], 0))
    srv.listen(1)
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    fd = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    while True:
        b = conn.recv(1 << 20)
        if not b:
            break
        os.write(fd, b)
    os.close(fd)
    conn.sendall(b"done")
    conn.close()
else:
    t0 = time.monotonic()
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])))
    with open(sys.argv[4], "rb") as f:
        s.sendfile(f)
    s.shutdown(socket.SHUT_WR)
    assert s.recv(4) == b"done"
    print("%.1f" % ((time.monotonic() - t0) * 1000))

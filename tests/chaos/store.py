"""The fenced store: a loopback TCP server that accepts a write only if its token is >= the
highest token it has accepted so far, and logs every write, accepted or rejected.

Protocol (one line each way):

    app:    W <token> <writer> <seq>
    store:  OK <token>            accepted
            REJECT <highest>      rejected: a higher token was accepted before

The log (store.jsonl) has one JSON object per write:
    {"t": <CLOCK_MONOTONIC s at the decision>, "token": <int>, "writer": <str>, "seq": <int>,
     "ok": <bool>, "highest": <highest accepted token before this write>}

The decision and the log line are made under one lock, so the log's order is the store's
order. It runs as a thread of the chaos runner (FencedStore(path).start()), or on its own:
    python3 store.py LOGFILE [PORT]
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

from common import tcp  # noqa: E402


class FencedStore(tcp.Listener):
    def __init__(self, log_path, host="127.0.0.1", port=0):
        super().__init__(host, port, name="store-accept")
        self.log_path = log_path
        self.highest = 0
        self.accepted = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._log = open(log_path, "a", buffering=1)
        self._conns = set()

    def start(self):
        return self.start_accepting()

    def write(self, token, writer, seq):
        """The fence: one decision, logged under the lock. Returns (ok, highest_before)."""
        with self._lock:
            before = self.highest
            ok = token >= before
            if ok:
                self.highest = token
                self.accepted += 1
            else:
                self.rejected += 1
            self._log.write(json.dumps({"t": time.clock_gettime(time.CLOCK_MONOTONIC),
                                        "token": token, "writer": writer, "seq": seq,
                                        "ok": ok, "highest": before}) + "\n")
            return ok, before

    def on_accept(self, c):
        with self._lock:
            self._conns.add(c)
        self.spawn(self._serve, c, name="store-conn")

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            for raw in f:
                words = raw.decode("ascii", "replace").split()
                if len(words) != 4 or words[0] != "W":
                    c.sendall(b"ERR\n")
                    continue
                try:
                    token, seq = int(words[1]), int(words[3])
                except ValueError:
                    c.sendall(b"ERR\n")
                    continue
                ok, before = self.write(token, words[2], seq)
                c.sendall(("OK %d\n" % token if ok else "REJECT %d\n" % before).encode())
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self.stop_accepting()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            tcp.close_socket(c)
        self.join()
        with self._lock:
            self._log.close()


def read_log(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass  # a line cut by a crash
    except FileNotFoundError:
        pass
    return out


if __name__ == "__main__":
    s = FencedStore(sys.argv[1], port=int(sys.argv[2]) if len(sys.argv) > 2 else 0).start()
    print(s.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        s.close()
        os._exit(0)

"""Processes of a long run, shared by the chaos runner (tests/chaos/runner.py) and the soak
(tests/soak/run.py): both run one child runner per backend (`--one`), in parallel or in turn,
and must stop every child and remove their temp dirs on Ctrl-C or SIGTERM."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback


def mono():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def say(*a):
    sys.stdout.write(" ".join(str(x) for x in a) + "\n")
    sys.stdout.flush()


def pdeathsig():
    """preexec_fn: the child dies with the runner (PR_SET_PDEATHSIG; children must be started
    from the main thread, whose exit is what the kernel watches)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


class EventLog:
    """A JSON-lines log, one object per call: {"ev": ev, "t": CLOCK_MONOTONIC s, **kw}.
    Thread-safe; returns the "t" it wrote."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, ev, **kw):
        kw["ev"] = ev
        kw.setdefault("t", mono())
        with self.lock:
            self.f.write(json.dumps(kw) + "\n")
        return kw["t"]


def sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt, so that Ctrl-C and a kill clean up the same way."""
    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)


def run_and_close(run):
    """run.run(), then run.close() whatever happened; a second Ctrl-C or the parent's SIGTERM
    waits for the cleanup. Returns the child's exit status: 0, 130 (interrupted) or 2 (an
    error, its traceback printed)."""
    status = 0
    try:
        run.run()
    except KeyboardInterrupt:
        status = 130
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        status = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        run.close()
    return status


def backends_from(text, allowed):
    """The comma-separated backends of text, or None (after saying which one is unknown)."""
    backends = [b.strip() for b in text.split(",") if b.strip()]
    for b in backends:
        if b not in allowed:
            say("unknown backend %r (%s)" % (b, ", ".join(allowed)))
            return None
    return backends


def agent_missing(lk_bin, build):
    """True (after saying how to build it) when there is no agent binary at lk_bin."""
    if os.path.exists(lk_bin):
        return False
    say("no agent binary at %s: build it (make BUILD=%s %s/leasekeeper) or set LK_BIN"
        % (lk_bin, build, build))
    return True


def run_per_backend(backends, argv_of, serial, grace, top, keep):
    """One child runner per backend (argv_of(backend)), all at once or, with serial, one after
    the other. Returns {backend: exit status}; on Ctrl-C or SIGTERM stops the children
    (SIGTERM, then SIGKILL after grace seconds), removes top unless keep, and returns None."""
    procs, status = [], {}
    try:
        for b in backends:
            p = subprocess.Popen(argv_of(b), preexec_fn=pdeathsig)
            procs.append((b, p))
            if serial:
                status[b] = p.wait()
        for b, p in procs:
            status[b] = p.wait()
    except KeyboardInterrupt:
        for b, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for b, p in procs:
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
        if not keep:
            shutil.rmtree(top, ignore_errors=True)
        say("interrupted")
        return None
    return status

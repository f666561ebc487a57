"""LeaderElector: campaign for one lock and tell the app when to start and stop leading.

The rules it keeps for the app (proto/PROTOCOL.md, "The rules that keep you safe"):

- LEADER starts a tenure: on_started_leading(token).
- The tenure ends for the app at its deadline (the until_mono_ms of its LEADER, moved by each
  RENEWED), whether or not the agent says anything: run() waits at most until the deadline, so
  on_stopped_leading("deadline") fires on time even while the agent is frozen. is_leader()
  checks the clock itself.
- STEPDOWN: on_stopped_leading("stepdown"), and only after it returned, ACK.
- A tenure that ended at its deadline (or a LEADER that arrived past it) while the agent
  said neither LOST nor STEPDOWN for it: once on_stopped_leading("deadline") returned, the
  elector hands the lock back, RESIGN then CAMPAIGN, so that the agent (if it was not frozen
  itself) stops holding it for an app that no longer leads, and this replica stays a
  candidate. LEADER lines that arrive before OK RESIGN are from before the RESIGN: ignored.
- LOST, FOLLOWER, RELEASED of the tenure, STOP, EOF, a line that is not protocol, stop():
  on_stopped_leading(<reason>) at once.
"""

import errno
import logging
import os
import random
import select
import threading

from .client import Client
from .protocol import (AuthError, ConnectionClosed, LeaseKeeperError, ProtocolError,
                       RequestError, monotonic, valid_lock_name)

__all__ = ["LeaderElector", "STOP_REASONS"]

log = logging.getLogger("leasekeeper")

# The reasons on_stopped_leading() is called with. "lost:<reason>" carries the LOST event's
# reason (renew_deadline, taken, expired, backend_error, or a newer one).
STOP_REASONS = {
    "stepdown": "STEPDOWN from the agent (a drain): ACK is sent when the callback returns",
    "lost:<reason>": "LOST from the agent: another replica may lead already",
    "deadline": "the tenure's deadline (until_mono_ms) passed without a RENEWED",
    "eof": "the connection to the agent closed or failed",
    "protocol_error": "the agent sent a line this client cannot trust; the connection is dropped",
    "follower": "the agent reported another holder (or none) while we led",
    "released": "the agent reported the tenure released",
    "superseded": "a LEADER with another token arrived while we led",
    "stop": "STOP from the agent: its drain is over; run() returns \"stop\"",
    "closed": "the app called stop() or close(); run() returns \"closed\"",
    "error": "a callback raised, or an exception (KeyboardInterrupt...) interrupted run(); "
             "run() re-raises it after this callback",
}


def _noop(*_):
    pass


class LeaderElector:
    """Campaign for `lock` through the local agent and dispatch leadership callbacks.

        def lead(token): ...        # start leader work, fenced with token; return quickly
        def stop(reason): ...       # stop leader work; return when it has stopped

        with LeaderElector("scheduler", on_started_leading=lead,
                           on_stopped_leading=stop) as e:
            e.run()                 # blocks; returns "stop" after the agent's drain

    All callbacks run on the thread that calls run(), one at a time. They must return
    promptly: while one runs, the elector cannot end a tenure at its deadline. Do the leader
    work itself on another thread and check is_leader() (or the deadline) in it; stop it in
    on_stopped_leading, which must not return before the work has stopped (for "stepdown",
    the ACK that lets the agent release the lock is sent when it returns).

    Arguments:
      socket_path         default $LEASEKEEPER_SOCKET, then /run/leasekeeper/agent.sock
      client_name         the name the agent logs for this connection
      auth_key_file       used when the agent wants a MAC (default $LEASEKEEPER_AUTH_KEY_FILE);
                          auth_key (32 bytes) instead gives the key itself
      on_started_leading  cb(token: int): this replica leads
      on_stopped_leading  cb(reason: str): it no longer does (reasons: STOP_REASONS); called
                          only after an on_started_leading
      on_new_leader       cb(identity: str): the holder changed (our own identity when we lead)
      on_message          cb(Message): every line from the agent after HELLO, before the
                          elector acts on it (logging, verbs this library does not know)
      reconnect           after EOF (or a failed connect), connect again with backoff,
                          HELLO and CAMPAIGN again; if False, run() returns "eof" at EOF and
                          raises if the first connection fails
      backoff_initial, backoff_max   reconnect backoff in seconds (doubling, with jitter)
      connect_timeout     seconds for connect, banner and HELLO
    """

    def __init__(self, lock, socket_path=None, client_name=None, auth_key_file=None,
                 on_started_leading=None, on_stopped_leading=None, on_new_leader=None,
                 reconnect=True, on_message=None, auth_key=None, backoff_initial=0.2,
                 backoff_max=5.0, connect_timeout=10.0):
        if not valid_lock_name(lock):
            raise ValueError("bad lock name %r: [A-Za-z0-9._-]{1,128}" % (lock,))
        self.lock = lock
        self.socket_path = socket_path
        self.client_name = client_name
        self.auth_key_file = auth_key_file
        self.auth_key = auth_key
        self.on_started_leading = on_started_leading or _noop
        self.on_stopped_leading = on_stopped_leading or _noop
        self.on_new_leader = on_new_leader or _noop
        self.on_message = on_message
        self.reconnect = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout

        self.client = None            # the current Client while run() is connected
        self.holder = None            # the last known holder's identity
        self.last_stop_reason = None  # the reason of the last on_stopped_leading
        self.last_deadline = None     # the deadline the last tenure had when it ended
        self._tenure = None           # (token, deadline in monotonic seconds) while leading
        self._ttl_ms = None
        self._ended = None            # token of a tenure that ended on this connection
        self._resign = None           # token of a tenure ended by its deadline: hand it back
        self._resigning = False       # RESIGN sent, its reply not read yet
        self.resigns = 0              # RESIGN + CAMPAIGN pairs sent after a deadline
        self._campaigning = False
        self._stop_requested = False
        self._closed = False
        self._running = False
        self._state_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- what the app asks (any thread)

    def is_leader(self):
        """Whether this replica leads now: a tenure started and its deadline has not passed
        (checked against the clock, whether or not the elector has noticed yet)."""
        t = self._tenure
        return t is not None and monotonic() < t[1]

    @property
    def token(self):
        """The fencing token of the current tenure, None when not leading."""
        t = self._tenure
        return t[0] if t is not None and monotonic() < t[1] else None

    def deadline(self):
        """When the current tenure ends unless a RENEWED moves it, in time.monotonic()
        seconds; None when not leading."""
        t = self._tenure
        return t[1] if t is not None else None

    def deadline_mono_ms(self):
        """deadline() in CLOCK_MONOTONIC milliseconds (comparable to until_mono_ms)."""
        t = self._tenure
        return int(t[1] * 1000) if t is not None else None

    def time_left(self):
        """Seconds until the deadline (0.0 once it passed), None when not leading."""
        t = self._tenure
        return None if t is None else max(0.0, t[1] - monotonic())

    @property
    def ttl_ms(self):
        """ttl_ms of the current tenure's last LEADER or RENEWED."""
        return self._ttl_ms if self._tenure is not None else None

    def stop(self):
        """Make run() stop leading (on_stopped_leading("closed")), close the connection
        (the agent counts that as a step-down) and return "closed". Safe from any thread and
        from a signal handler. A stop() before run() makes the next run() return at once."""
        self._stop_requested = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # full (already woken) or closed

    def close(self):
        """stop(), and free the elector's resources once run() has returned. The elector
        cannot run again."""
        self.stop()
        with self._state_lock:
            self._closed = True
            if self._running:
                return  # run() frees them on its way out
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the loop

    def run(self):
        """Connect, campaign and dispatch callbacks until the agent sends STOP (returns
        "stop"), stop()/close() is called (returns "closed"), or, with reconnect=False, the
        connection ends (returns "eof" or "protocol_error"). Raises AuthError when the agent
        refuses our key (or wants one we do not have), RequestError when it refuses the
        CAMPAIGN (e.g. unknown_lock), and, with reconnect=False, the error of a failed first
        connect (OSError, ConnectionClosed). Leadership never outlives run()."""
        with self._state_lock:
            if self._closed:
                raise LeaseKeeperError("the elector is closed")
            if self._running:
                raise LeaseKeeperError("run() is already running")
            self._running = True
        try:
            return self._run()
        except BaseException:
            self._stop_leading("error")
            raise
        finally:
            self._disconnect()
            self._stop_requested = False
            with self._state_lock:
                self._running = False
                closed = self._closed
            if closed:
                self._release()

    def _run(self):
        backoff = self.backoff_initial
        while True:
            if self._stop_requested:
                return "closed"
            try:
                self._connect()
            except AuthError:
                raise
            except (OSError, LeaseKeeperError) as e:
                if not self.reconnect:
                    raise
                log.warning("leasekeeper: connecting to %s: %s; again in %.1fs",
                            self.socket_path or "the agent", e, backoff)
                self._sleep(backoff)
                backoff = min(self.backoff_max, backoff * 2)
                continue
            result = self._serve()
            self._disconnect()
            if self._campaigning:
                backoff = self.backoff_initial  # that connection worked: start over
            if result in ("stop", "closed") or not self.reconnect:
                return result
            log.warning("leasekeeper: connection to the agent ended (%s); reconnecting in %.1fs",
                        result, backoff)
            self._sleep(backoff)
            backoff = min(self.backoff_max, backoff * 2)

    def _connect(self):
        c = Client(self.socket_path, self.client_name, auth_key=self.auth_key,
                   auth_key_file=self.auth_key_file, timeout=self.connect_timeout)
        c.connect()
        self.socket_path = c.socket_path
        self.client = c
        self._ended = None
        self._resign = None
        self._resigning = False
        self._campaigning = False
        try:
            c.request("CAMPAIGN " + self.lock)
        except BaseException:
            self._disconnect()
            raise

    def _disconnect(self):
        c, self.client = self.client, None
        if c is not None:
            c.close()

    def _release(self):
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def _sleep(self, seconds):
        """Wait `seconds` (with jitter), or until stop()."""
        end = monotonic() + seconds * random.uniform(0.8, 1.2)
        while not self._stop_requested:
            left = end - monotonic()
            if left <= 0:
                return
            select.select([self._wake_r], [], [], left)
            self._drain_wake()

    def _drain_wake(self):
        try:
            while os.read(self._wake_r, 512):
                pass
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise

    def _serve(self):
        """Handle one connection's lines until it ends. Returns "stop", "closed", "eof" or
        "protocol_error"."""
        c = self.client
        while True:
            if self._stop_requested:
                self._stop_leading("closed")
                return "closed"
            timeout = None
            t = self._tenure
            if t is not None:
                timeout = t[1] - monotonic()
                if timeout <= 0:
                    self._stop_leading("deadline")
                    continue
            if self._resign is not None:
                timeout = 0  # first what the agent already said: a LOST makes it moot
            try:
                m = c.read_message(timeout, wake_fd=self._wake_r)
            except ProtocolError as e:
                log.error("leasekeeper: %s: dropping the connection", e)
                self._stop_leading("protocol_error")
                return "protocol_error"
            except ConnectionClosed as e:
                log.info("leasekeeper: %s", e)
                self._stop_leading("eof")
                return "eof"
            if m is None:
                self._drain_wake()
                if self._resign is not None and not self._stop_requested:
                    try:
                        self._hand_back(c)
                    except ConnectionClosed as e:
                        log.info("leasekeeper: %s", e)
                        return "eof"
                continue
            # Whatever the line is, a tenure whose deadline has passed is over first.
            t = self._tenure
            if t is not None and monotonic() >= t[1]:
                self._stop_leading("deadline")
            if self.on_message is not None:
                self.on_message(m)
            try:
                r = self._handle(c, m)
            except ProtocolError as e:
                log.error("leasekeeper: %s: dropping the connection", e)
                self._stop_leading("protocol_error")
                return "protocol_error"
            except ConnectionClosed as e:
                log.info("leasekeeper: %s", e)
                self._stop_leading("eof")
                return "eof"
            if r is not None:
                return r

    def _handle(self, c, m):
        kind = m.kind
        if m.is_reply:
            verb = (m.request or "").split(" ")[0]
            if verb == "CAMPAIGN":
                if m.ok:
                    self._campaigning = True
                elif m.code == "draining":
                    log.warning("leasekeeper: the agent is draining: %s", m.raw)
                else:
                    raise RequestError(m, "CAMPAIGN " + self.lock)
            elif verb == "RESIGN":
                self._resigning = False
                if not m.ok:
                    log.warning("leasekeeper: %s: %s", m.request, m.raw)
            elif not m.ok:
                log.warning("leasekeeper: %s: %s", m.request, m.raw)
            return None
        if kind == "STOP":
            self._stop_leading("stop")
            return "stop"
        if kind not in ("LEADER", "RENEWED", "FOLLOWER", "STEPDOWN", "LOST", "RELEASED"):
            return None  # DRAINED, or a verb newer than this library
        if m.lock != self.lock:
            return None
        t = self._tenure
        if kind == "LEADER":
            token = m.token()
            deadline = c.deadline_of(m)
            if t is not None and t[0] == token:
                self._tenure = (token, deadline)  # a repeated LEADER: as a RENEWED
                self._ttl_ms = m.ms("ttl_ms")
                return None
            if t is not None:
                self._stop_leading("superseded")
            if self._resign is not None and token != self._resign:
                self._resign = None  # the agent has moved on from that tenure
            if token == self._ended:
                log.warning("leasekeeper: LEADER for tenure %d that already ended: ignored", token)
                return None
            if self._resigning:
                # Sent before the agent read our RESIGN, which gives this tenure up too.
                log.info("leasekeeper: LEADER %s token=%d from before our RESIGN: ignored",
                         self.lock, token)
                self._ended = token
                return None
            if deadline <= monotonic():
                log.warning("leasekeeper: LEADER %s token=%d arrived past its deadline: ignored",
                            self.lock, token)
                self._ended = token
                self._resign = token
                return None
            self._ttl_ms = m.ms("ttl_ms")
            self._tenure = (token, deadline)
            self.on_started_leading(token)
            self._new_leader(c.identity)
        elif kind == "RENEWED":
            token = m.token()
            deadline = c.deadline_of(m)
            if t is not None and t[0] == token:
                self._tenure = (token, deadline)
                self._ttl_ms = m.ms("ttl_ms")
        elif kind == "FOLLOWER":
            holder = m.get("holder")
            if t is not None:
                self._stop_leading("follower")
            if holder and holder != "-":
                self._new_leader(holder)
        elif kind == "STEPDOWN":
            token = m.token()
            if token == self._resign:
                self._resign = None  # the agent is giving it up: the ACK hands it back
            if t is not None:
                self._stop_leading("stepdown")
            c.request("ACK %s %d" % (self.lock, token))
        elif kind == "LOST":
            if self._resign is not None and m.get("token") == str(self._resign):
                self._resign = None  # the agent no longer holds it
            if t is not None:
                self._stop_leading("lost:" + (m.get("reason") or "unknown"))
        elif kind == "RELEASED":
            token = m.token()
            if token == self._resign:
                self._resign = None
            if t is not None and t[0] == token:
                self._stop_leading("released")
        return None

    def _hand_back(self, c):
        """The tenure self._resign ended at its deadline and the agent has not said LOST or
        STEPDOWN for it: it may well still hold the lock, renewing it for an app that no
        longer leads (the app was frozen, or the lines came late), and nobody else could
        lead until it loses it. RESIGN releases it (the app has stopped already: that is
        safe), CAMPAIGN keeps this replica a candidate. Both replies come back through
        _handle(). If the agent is the one that was frozen, the two wait in the socket and
        run after its LOST: harmless."""
        token, self._resign = self._resign, None
        log.warning("leasekeeper: tenure %s token=%d ended at its deadline without a word from "
                    "the agent: RESIGN and CAMPAIGN again", self.lock, token)
        self._resigning = True
        self.resigns += 1
        c.request("RESIGN " + self.lock)
        c.request("CAMPAIGN " + self.lock)

    def _new_leader(self, identity):
        if identity and identity != self.holder:
            self.holder = identity
            self.on_new_leader(identity)

    def _stop_leading(self, reason):
        t = self._tenure
        if t is None:
            return
        self._tenure = None
        self._ended = t[0]
        if reason == "deadline":
            self._resign = t[0]  # sent once on_stopped_leading has returned (_serve)
        self.last_stop_reason = reason
        self.last_deadline = t[1]
        if reason == "error":
            try:
                self.on_stopped_leading(reason)
            except Exception:  # noqa: BLE001 - the first error is the one run() raises
                log.exception("leasekeeper: on_stopped_leading(%r) raised", reason)
        else:
            self.on_stopped_leading(reason)

"""Leader intervals as apps see them, for scenarios that must show no two leaders.

A leader interval runs from LEADER's arrival until the first of LOST, STEPDOWN, EOF (or the
app's own disconnect) and the app's deadline (until_mono_ms, moved only by a RENEWED that
arrived before it passed): the rule the client libraries keep (proto/PROTOCOL.md, "The deadline
rule"). Lines are stamped with time.monotonic(), which is CLOCK_MONOTONIC, the clock of
until_mono_ms, so intervals of apps on different agents compare directly.

    tr = Tenures(self)                 # in an LKTestCase
    app = tr.campaign(agent)           # connects, CAMPAIGN x, collects its events
    tr.first_leader(); tr.overlaps()   # [(interval, interval, ms)]: must be []

TenureAssertions, mixed into a test case, checks them: assertNoOverlap(tr, what),
assertIncreasing(tokens), wait_holdoff(tr, apps).
"""

import time

from harness import DEFAULT_TIMEOUT, ConnectionClosed, wait_until


class Interval:
    def __init__(self, app, token, start, deadline):
        self.app, self.token, self.start, self.deadline = app, token, start, deadline
        self.end = None
        self.how = None

    def __repr__(self):
        return "<%s token=%d %.3f-%.3f %s>" % (self.app, self.token, self.start,
                                              self.end if self.end is not None else -1,
                                              self.how)


class App:
    """One app connection and every event it got, in order."""

    def __init__(self, client, agent, name):
        self.client, self.agent, self.name = client, agent, name
        self.events = []
        self.closed_t = None

    def of(self, kind, after=None):
        return [e for e in self.events if e.kind == kind and (after is None or e.t >= after)]


class Tenures:
    """The apps of a scenario: collects their events and turns them into leader intervals."""

    def __init__(self, test):
        self.test = test
        self.apps = []

    def campaign(self, agent, lock="x", name=None):
        name = name or "app%d@%s" % (len(self.apps) + 1, agent.identity)
        c = self.test.connect(agent, client_name="app", label=name)
        c.keep_renewed = True   # RENEWED moves the app's deadline: needed for its interval
        c.call_ok("CAMPAIGN %s" % lock)
        app = App(c, agent, name)
        self.apps.append(app)
        return app

    def close(self, app):
        app.closed_t = time.monotonic()
        app.client.close()

    def pump(self):
        for app in self.apps:
            if app.closed_t is not None or app.client.eof:
                continue
            while True:
                try:
                    ev = app.client.next_event(0)
                except ConnectionClosed:
                    break
                if ev is None:
                    break
                app.events.append(ev)

    def wait(self, pred, timeout=DEFAULT_TIMEOUT, what="an event"):
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            v = pred()
            if v:
                return v
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %.1fs waiting for %s; events: %s"
                                     % (timeout, what, self.story()))
            time.sleep(0.01)

    def settle(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump()
            time.sleep(0.01)
        self.pump()

    def leaders(self, after=None):
        """(app, LEADER event) for every LEADER that arrived at or after `after`, in order."""
        out = [(a, e) for a in self.apps for e in a.of("LEADER", after)]
        return sorted(out, key=lambda x: x[1].t)

    def first_leader(self, after=None, timeout=DEFAULT_TIMEOUT):
        return self.wait(lambda: (self.leaders(after) or [None])[0], timeout,
                         "a LEADER%s" % ("" if after is None else " after %.3f" % after))

    def event(self, app, kind, after=None, timeout=DEFAULT_TIMEOUT):
        return self.wait(lambda: (app.of(kind, after) or [None])[0], timeout,
                         "%s at %s" % (kind, app.name))

    def intervals(self):
        self.pump()
        now = time.monotonic()
        out = []
        for app in self.apps:
            ends = [x for x in (app.closed_t, app.client.eof_at) if x is not None]
            cur = None
            for e in app.events:
                if e.kind == "LEADER":
                    if cur is not None:   # LEADER while leading: ends nothing, counts as open
                        cur.end, cur.how = min(e.t, cur.deadline), "leader-again"
                        out.append(cur)
                    cur = Interval(app.name, e.token, e.t, e.int("until_mono_ms") / 1000.0)
                elif cur is None or e.get("token") != str(cur.token):
                    continue
                elif e.kind == "RENEWED":
                    if e.t < cur.deadline:
                        cur.deadline = max(cur.deadline, e.int("until_mono_ms") / 1000.0)
                elif e.kind in ("LOST", "STEPDOWN"):
                    cur.end = min(e.t, cur.deadline)
                    cur.how = e.kind if e.t <= cur.deadline else "deadline"
                    out.append(cur)
                    cur = None
            if cur is not None:
                end = min(ends + [now])
                cur.end = min(end, cur.deadline)
                cur.how = "deadline" if cur.deadline <= end else ("closed" if ends else "open")
                out.append(cur)
        return sorted(out, key=lambda i: i.start)

    def overlaps(self):
        """[(a, b, ms)] for every two leader intervals that overlap."""
        iv = self.intervals()
        out = []
        for i in range(len(iv)):
            for j in range(i + 1, len(iv)):
                ms = (min(iv[i].end, iv[j].end) - max(iv[i].start, iv[j].start)) * 1000
                if ms > 0:
                    out.append((iv[i], iv[j], ms))
        return out

    def tokens(self):
        return [i.token for i in self.intervals()]

    def story(self):
        evs = sorted(((e.t, a.name, e.raw) for a in self.apps for e in a.events
                      if e.kind != "RENEWED"))
        return "\n  " + "\n  ".join("%.3f %s %s" % x for x in evs)


class TenureAssertions:
    """For an LKTestCase whose scenario collects its apps' events in a Tenures."""

    def assertNoOverlap(self, tr, what):
        """No two apps led at once (printing the intervals and the worst overlap)."""
        ov = tr.overlaps()
        worst = max([ms for _, _, ms in ov] or [0.0])
        print("%s: leader intervals %s; overlap %.0f ms" % (what, tr.intervals(), worst))
        self.assertEqual(ov, [], "two leaders at once:%s" % tr.story())

    def assertIncreasing(self, tokens, msg="tokens not strictly increasing"):
        self.assertEqual(tokens, sorted(set(tokens)), msg)

    def wait_holdoff(self, tr, apps, timeout):
        """The first of apps whose STATUS shows a hold-off (holdoff_ms > 0): (app, its lock)."""
        def holding_off():
            tr.pump()
            for a in apps:
                lk = a.client.status()["locks"][0]
                if lk.get("holdoff_ms", 0) > 0:
                    return a, lk
            return None
        return wait_until(holding_off, timeout=timeout, interval=0.05,
                          what="STATUS to show a hold-off")

"""Config input limits with the real binary: `leasekeeper check-config -c FILE` and
`leasekeeper agent -c FILE` reject a hostile file (100k nested flow collections, more bytes than
the cap, an endless input) in well under a second, with `file:line:col: ...` naming the cap.

The parser's own caps and their boundaries are unit-tested in tests/check_config.c; this module
checks what an operator sees from the command line, and how long it takes, process start
included. The times measured are printed."""

import os
import time
import unittest

from harness import LKTestCase

NESTED = 100000
MAX_BYTES = 1024 * 1024           # LK_CONFIG_MAX_BYTES (agent/config.h)
MAX_DEPTH = 64                    # LK_CONFIG_MAX_DEPTH
DEPTH_MSG = "yaml: nested too deeply (more than %d levels of lists and mappings)" % MAX_DEPTH
SIZE_MSG = "yaml: the file is too large (more than %d bytes)" % MAX_BYTES
# The contract is "well under a second"; the process start is included, and the sanitizer
# build of `make test` runs these too.
LIMIT_S = 1.0

# A config that is valid except for what a test puts after "locks: ".
HEAD = """\
identity: pod-a
socket: /tmp/lk-limits-never-bound.sock
backends:
  - name: main
    type: redis
    address: "127.0.0.1:1"
locks: """


class ConfigLimitsTest(LKTestCase):
    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        return path

    def rejected(self, what, path, want, commands=("check-config", "agent")):
        """Run each command on path: exit status 1, exactly the one error line `want` (after
        the file name) on stderr, nothing on stdout, within LIMIT_S. Returns the times."""
        times = {}
        for cmd in commands:
            r = self.cli(cmd, "-c", path, timeout=30)
            times[cmd] = r.elapsed
            self.assertEqual(r.rc, 1, r)
            self.assertEqual(r.stdout, "", r)
            self.assertEqual(r.stderr.splitlines(), ["%s:%s" % (path, want)], r)
            self.assertLess(r.elapsed, LIMIT_S, "%s: `%s` took %.3fs" % (what, cmd, r.elapsed))
        print("%-44s %9d bytes: %s" % (what, os.path.getsize(path) if os.path.isfile(path)
                                       else -1,
                                       ", ".join("%s %.3fs" % kv for kv in times.items())))
        return times

    def test_100k_nested_flow_mappings_and_lists_are_rejected_fast(self):
        # libyaml's own loader needed 17-35 s for the first of these.
        self.rejected("100k nested {", self.write("braces.yaml", "{" * NESTED),
                      "1:%d: %s" % (MAX_DEPTH + 1, DEPTH_MSG))
        self.rejected("100k nested [", self.write("brackets.yaml", "[" * NESTED),
                      "1:%d: %s" % (MAX_DEPTH + 1, DEPTH_MSG))
        self.rejected("100k nested [{ alternating", self.write("mixed.yaml", "[{a: " * NESTED),
                      "1:%d: %s" % (5 * (MAX_DEPTH // 2) + 1, DEPTH_MSG))

    def test_deep_nesting_inside_a_real_config_points_at_its_line(self):
        # The root mapping is level 1: the 64th "[" under locks is the 65th level.
        path = self.write("deep-locks.yaml", HEAD + "[" * NESTED + "\n")
        self.rejected("100k nested [ under locks:", path,
                      "7:%d: %s" % (len("locks: ") + MAX_DEPTH, DEPTH_MSG))

    def test_a_file_over_the_size_cap_is_rejected_with_its_cap(self):
        # Valid YAML throughout (comment lines), so that only the size is wrong; the error
        # points at the first byte past the cap.
        line = "#" * 63 + "\n"
        text = HEAD + "[x]\n" + line * (MAX_BYTES // len(line) + 1)
        path = self.write("big.yaml", text)
        cap_line = text[:MAX_BYTES].count("\n") + 1
        cap_col = MAX_BYTES - text[:MAX_BYTES].rfind("\n")
        self.rejected("a config grown past 1 MiB", path,
                      "%d:%d: %s" % (cap_line, cap_col, SIZE_MSG))
        # 100k nested "{" and then more than the cap: the size is checked first.
        path = self.write("big-braces.yaml", "{" * (MAX_BYTES + 1))
        self.rejected("1 MiB + 1 of {", path, "1:%d: %s" % (MAX_BYTES + 1, SIZE_MSG))

    def test_huge_and_endless_inputs_are_read_only_up_to_the_cap(self):
        sparse = os.path.join(self.tmp, "huge.yaml")
        with open(sparse, "wb") as f:
            f.truncate(8 << 30)  # 8 GiB of NUL bytes, sparse
        self.rejected("an 8 GiB (sparse) file", sparse, "1:%d: %s" % (MAX_BYTES + 1, SIZE_MSG))
        self.rejected("/dev/zero", "/dev/zero", "1:%d: %s" % (MAX_BYTES + 1, SIZE_MSG))

    def test_a_file_of_exactly_the_cap_is_parsed(self):
        # The boundary, through the binary: exactly MAX_BYTES is read and parsed (and then
        # rejected for what it says, not for its size).
        text = HEAD + "[x]\n"
        text += "#" * (MAX_BYTES - len(text) - 1) + "\n"
        self.assertEqual(len(text), MAX_BYTES)
        path = self.write("exact.yaml", text)
        t0 = time.monotonic()
        r = self.cli("check-config", "-c", path)
        print("exactly 1 MiB: answered in %.3fs" % (time.monotonic() - t0))
        self.assertEqual(r.rc, 1, r)
        self.assertNotIn("too large", r.stderr)
        self.assertRegex(r.stderr, r"(?m)^%s:7:9: locks\[0\]: " % path.replace(".", r"\."))


if __name__ == "__main__":
    unittest.main(verbosity=2)

#!/usr/bin/env python3
"""Tests of tools/checksrc.py: for each rule, a small snippet that follows it (no finding) and
one that breaks it (the rule's finding on the right line), in a private tree.

    python3 tests/checksrc_test.py
"""

import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from contextlib import redirect_stdout

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TOOL = os.path.join(REPO, "tools", "checksrc.py")
sys.path.insert(0, os.path.join(REPO, "tools"))

import checksrc  # noqa: E402


def c(text):
    """A snippet: dedented, and four leading spaces per level turned into the tree's tabs."""
    out = []
    for ln in textwrap.dedent(text).lstrip("\n").split("\n"):
        stripped = ln.lstrip(" ")
        out.append("\t" * ((len(ln) - len(stripped)) // 4) + stripped)
    return "\n".join(out)


class Tree(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="checksrc-")
        self.addCleanup(shutil.rmtree, self.root)
        for d in ("agent", "cli", "locks", "proto", "tests"):
            os.makedirs(os.path.join(self.root, d))

    def write(self, rel, text):
        path = os.path.join(self.root, rel)
        with open(path, "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        return path

    def run_checksrc(self, *paths, extra=()):
        """(exit status, [(file, line, rule)]) of checksrc over the tree (or paths in it)."""
        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = checksrc.main(["--root", self.root] + list(extra)
                               + [os.path.join(self.root, p) for p in paths])
        found = []
        for ln in buf.getvalue().splitlines():
            f, line, rule, _ = ln.split(":", 3)
            found.append((f, int(line), rule.strip()))
        return rc, found

    def assertClean(self, *paths, extra=()):
        rc, found = self.run_checksrc(*paths, extra=extra)
        self.assertEqual(found, [])
        self.assertEqual(rc, 0)

    def assertFinds(self, expected, *paths, extra=()):
        rc, found = self.run_checksrc(*paths, extra=extra)
        self.assertEqual(found, expected)
        self.assertEqual(rc, 1)


class LineLengthTest(Tree):
    def test_a_line_of_100_characters_is_fine(self):
        self.write("proto/a.c", "/* " + "x" * 94 + " */")
        self.assertClean()

    def test_a_line_of_101_characters_is_a_finding(self):
        self.write("proto/a.c", "/* ok */\n/* " + "x" * 95 + " */")
        self.assertFinds([("proto/a.c", 2, "line-length")])

    def test_a_tab_counts_as_tab_width_columns(self):
        self.write("proto/a.c", "\t/* " + "x" * 90 + " */")     # 97 characters
        self.assertClean()
        self.assertFinds([("proto/a.c", 1, "line-length")], extra=["--tab-width", "8"])


class AssignmentInConditionTest(Tree):
    def test_comparisons_and_parenthesised_assignments_are_fine(self):
        self.write("agent/a.c", c("""
            static int f(int *p, int x)
            {
                int rc;

                if (x == 1 || x != 2 || x <= 3 || x >= 4)
                    return 0;
                while ((x = *p++))
                    ;
                if ((rc = f(p, x)) < 0)
                    return rc;
                if (x >> 1 >= 2 && (x <<= 1) > 0)
                    return 1;
                if (*p == '=' && p[1] != '=')
                    return 2;
                return 0;
            }
        """))
        self.assertClean()

    def test_a_plain_assignment_in_if_or_while_is_a_finding(self):
        self.write("agent/a.c", c("""
            static int f(int *p, int x)
            {
                if (x = *p)
                    return 1;
                while (x
                       |= 4)
                    x--;
                if (x > 0 && p[0] <<= 2)
                    return 2;
                return 0;
            }
        """))
        self.assertFinds([("agent/a.c", 3, "assign-cond"), ("agent/a.c", 6, "assign-cond"),
                          ("agent/a.c", 8, "assign-cond")])

    def test_strings_comments_and_macros_are_not_conditions(self):
        self.write("agent/a.c", c("""
            /* if (x = 1) in a comment */
            #define SET_IF(x) if (x = 1) {}
            static const char *s = "while (x = 1)";
        """))
        self.assertClean()


class StaticTest(Tree):
    def test_static_and_header_declared_functions_are_fine(self):
        self.write("locks/b.h", c("""
            struct lk_b;
            int lk_b_run(struct lk_b *b, int (*cb)(void *arg), void *arg);
            extern const char *const lk_b_names[];
        """))
        self.write("locks/b.c", c("""
            #include "locks/b.h"

            struct lk_b { int n; };
            static int helper(void *arg) { return arg != 0; }
            static const struct ops { int (*fn)(void *); } the_ops = { helper };
            static int counter;
            const char *const lk_b_names[] = { "a", "b" };

            int lk_b_run(struct lk_b *b, int (*cb)(void *arg), void *arg)
            {
                counter++;
                return cb(arg) + b->n + the_ops.fn(arg);
            }
        """))
        self.write("locks/c.c", c("""
            #include "locks/b.h"

            static int use(struct lk_b *b) { return lk_b_run(b, 0, 0); }
        """))
        self.assertClean()

    def test_main_needs_no_header(self):
        self.write("cli/main.c", "int main(int argc, char **argv)\n{\n\treturn argc > 1;\n}")
        self.assertClean()

    def test_a_function_no_header_declares_is_a_finding(self):
        self.write("agent/a.c", c("""
            #include <stdio.h>

            struct lk_thing *
            lk_thing_new(void)
            {
                return NULL;
            }

            static void fine(void) {}
        """))
        self.assertFinds([("agent/a.c", 4, "static")])

    def test_a_file_scope_variable_without_static_is_a_finding(self):
        self.write("agent/a.h", "extern int lk_declared;")
        self.write("agent/a.c", c("""
            int lk_declared = 1;
            int counter;
            static int fine;
            const char *names[] = { "x" };
            struct pair { int a, b; } pair = { 1, 2 };
            void (*hook)(int) = 0;
        """))
        self.assertFinds([("agent/a.c", 2, "static"), ("agent/a.c", 4, "static"),
                          ("agent/a.c", 5, "static"), ("agent/a.c", 6, "static")])

    def test_a_header_declared_function_used_in_one_file_only_is_a_finding(self):
        self.write("agent/a.h", "int lk_a_one(void);\nint lk_a_two(void);")
        self.write("agent/a.c", c("""
            #include "agent/a.h"

            int lk_a_one(void) { return 1; }
            int lk_a_two(void) { return lk_a_one(); }
        """))
        self.write("tests/check_a.c", "static int t(void) { return lk_a_two(); }")
        # lk_a_one is used only in a.c (a comment or a string elsewhere is no use)
        self.write("agent/b.c", '/* lk_a_one() */ static const char *s = "lk_a_one";')
        self.assertFinds([("agent/a.c", 3, "static")])

    def test_functions_of_installed_headers_are_api(self):
        with open(os.path.join(self.root, "Makefile"), "w") as f:
            f.write("CLIENT_HDRS := proto/client.h\n")
        self.write("proto/client.h", "int lk_client_api(void);")
        self.write("proto/client.c", '#include "proto/client.h"\nint lk_client_api(void) '
                                     '{ return 0; }')
        self.assertClean()


class IncludeTest(Tree):
    def setUp(self):
        super().setUp()
        for h in ("agent/agent.h", "locks/backend.h", "proto/codec.h", "cli/cli.h"):
            self.write(h, "/* " + h + " */")

    def test_includes_that_point_down_are_fine(self):
        self.write("agent/a.c", '#include "agent/agent.h"\n#include "locks/backend.h"\n'
                                '#include "proto/codec.h"\n#include <stdio.h>')
        self.write("locks/l.c", '#include "locks/backend.h"\n#include "proto/codec.h"\n'
                                '#include "backend.h"')
        self.write("proto/p.c", '#include "proto/codec.h"\n#include "codec.h"')
        self.write("cli/m.c", '#include "cli/cli.h"\n#include "agent/agent.h"\n'
                              '#include "proto/codec.h"')
        self.assertClean()

    def test_includes_that_point_up_are_findings(self):
        self.write("locks/l.c", '#include "locks/backend.h"\n#include "agent/agent.h"\n'
                                '#include "../agent/agent.h"')
        self.write("proto/p.c", '#include "agent/agent.h"\n#include "locks/backend.h"\n'
                                '#  include "proto/codec.h"')
        self.write("agent/a.c", '#include "cli/cli.h"')
        self.write("locks/k.c", '#include "cli/cli.h"')
        self.assertFinds([("agent/a.c", 1, "include"), ("locks/k.c", 1, "include"),
                          ("locks/l.c", 2, "include"), ("locks/l.c", 3, "include"),
                          ("proto/p.c", 1, "include"), ("proto/p.c", 2, "include")])

    def test_an_include_in_a_comment_is_no_include(self):
        self.write("proto/p.c", '/*\n#include "agent/agent.h"\n */')
        self.assertClean()


class IndentTest(Tree):
    def test_tabs_and_aligned_continuations_are_fine(self):
        self.write("agent/a.c", "static int f(int a,\n             int b)\n{\n"
                                "\tif (a)\n\t\treturn g(a,\n\t\t         b);\n"
                                "\t/* a comment\n\t * goes on */\n\treturn 0;\n}")
        self.assertClean()

    def test_a_space_before_a_tab_is_a_finding(self):
        self.write("agent/a.c", "static int f(void)\n{\n \treturn 0;\n}")
        self.assertFinds([("agent/a.c", 3, "indent")])

    def test_a_statement_indented_with_spaces_is_a_finding(self):
        self.write("agent/a.c", "static int f(void)\n{\n\tint a = 0;\n        return a;\n}")
        self.assertFinds([("agent/a.c", 4, "indent")])


class TrailingSpaceTest(Tree):
    def test_clean_lines_are_fine(self):
        self.write("proto/a.c", "static int x;\n\nstatic int y;")
        self.assertClean()

    def test_a_space_or_tab_at_the_end_is_a_finding(self):
        self.write("proto/a.c", "static int x; \n\t\nstatic int y;\t")
        self.assertFinds([("proto/a.c", 1, "trailing-space"), ("proto/a.c", 2, "trailing-space"),
                          ("proto/a.c", 3, "trailing-space")])


class SpecCitationTest(Tree):
    def test_docs_citations_and_code_are_fine(self):
        self.write("locks/a.c", '/* The holder rule (docs/invariants.md, I3). */\n'
                                'static const char *SPECIAL = "SPEC";\n'
                                'static int SPEC_LEN = 4; /* SPECIFIC, specification */')
        self.assertClean()

    def test_spec_in_a_comment_is_a_finding(self):
        # Spelt in two pieces so that this file does not cite the contract itself.
        spec = "SP" + "EC"
        self.write("locks/a.c", "/* The key\n * (%s \u00a74.2). */\nstatic int x; // see %s.md"
                   % (spec, spec))
        self.assertFinds([("locks/a.c", 2, "spec-citation"), ("locks/a.c", 3, "spec-citation")])


class CommandLineTest(Tree):
    def test_help_exit_status_and_output_format(self):
        r = subprocess.run([sys.executable, TOOL, "--help"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        for rule in checksrc.RULES:
            self.assertIn(rule, r.stdout)
        self.write("proto/a.c", "static int x; ")
        r = subprocess.run([sys.executable, TOOL, "--root", self.root], capture_output=True,
                           text=True)
        self.assertEqual((r.returncode, r.stdout),
                         (1, "proto/a.c:1: trailing-space: white space at the end of the "
                             "line\n"))
        r = subprocess.run([sys.executable, TOOL, "--root", self.root,
                            os.path.join(self.root, "agent")], capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stdout), (0, ""))
        r = subprocess.run([sys.executable, TOOL, "--root", self.root, "nosuch"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)

    def test_headers_are_checked_too(self):
        self.write("proto/a.h", "#include \"agent/agent.h\"\nint lk_a(void); ")
        self.assertFinds([("proto/a.h", 1, "include"), ("proto/a.h", 2, "trailing-space")])


if __name__ == "__main__":
    unittest.main()

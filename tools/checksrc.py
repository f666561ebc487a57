#!/usr/bin/env python3
"""checksrc: the house rules a machine can check, on the C sources (in the spirit of curl's
checksrc). Python 3 standard library only.

    python3 tools/checksrc.py                  agent/ cli/ locks/ proto/ (*.c, *.h)
    python3 tools/checksrc.py agent/lock.c     only these files or directories
    python3 tools/checksrc.py --list-rules

Each finding is printed as `file:line: rule: message` (file relative to the root). Exit status:
0 nothing found, 1 a finding, 2 a usage error (a path that is not there).

Rules:
  line-length   a line longer than --max-len (100) columns; a tab counts --tab-width (1)
                columns: the tree is written to 100 characters, tabs included
  assign-cond   an assignment at the top level of an if/while condition: `if (x = f())`.
                Inside parentheses of its own (`while ((c = next()))`,
                `if ((rc = f()) < 0)`) it is fine
  static        a function defined without `static` that no header under the checked
                directories declares; a file-scope variable without `static` that no header
                declares `extern`; a function a header declares but that no other file
                (agent/ cli/ locks/ proto/ tests/ examples/) uses, unless the header is
                installed (the Makefile's CLIENT_HDRS): it belongs in its file, `static`
  include       locks/ and proto/ include nothing from agent/, proto/ nothing from locks/,
                and nothing outside cli/ includes cli/ (the layers point one way)
  indent        indentation is tabs; spaces only after the tabs, to align a continued line
                or a comment: a space before a tab, or a statement that starts a line
                (after `;`, `{` or `}`) indented with spaces, is a finding
  trailing-space
                white space at the end of a line
  spec-citation "SPEC" cited in a comment: the contract lives in the repository's own docs
                (docs/, proto/PROTOCOL.md), which comments cite instead
"""

import argparse
import os
import re
import sys

RULES = ("line-length", "assign-cond", "static", "include", "indent", "trailing-space",
         "spec-citation")
DEFAULT_DIRS = ("agent", "cli", "locks", "proto")
# Where a function declared in a header may be used from, besides its own file.
USE_DIRS = ("agent", "cli", "locks", "proto", "tests", "examples")
# What each top directory may not include from.
FORBIDDEN_INCLUDES = {
    "locks": ("agent", "cli"),
    "proto": ("agent", "locks", "cli"),
    "agent": ("cli",),
}
NOT_CLI = ("cli",)  # any other directory: nothing from cli/

# ---------------------------------------------------------------------------------------------
# lexing: code with comments blanked and literals masked, the comments, preprocessor lines


class Source:
    """One C file. `code` has the text's length and line breaks, with comments turned into
    spaces and the insides of string and character literals into 'x', so that columns and
    line numbers still match the original. `comments` is [(line, text)]. `pp` is the set of
    line numbers (1-based) that belong to a preprocessor directive."""

    def __init__(self, path, rel, text):
        self.path, self.rel, self.text = path, rel, text
        self.lines = text.split("\n")
        self.code, self.comments = _lex(text)
        self.code_lines = self.code.split("\n")
        self.pp = _pp_lines(self.code_lines)

    def code_without_pp(self):
        """code with the preprocessor's lines blanked (offsets still match)."""
        return "\n".join(" " * len(ln) if i + 1 in self.pp else ln
                         for i, ln in enumerate(self.code_lines))

    def line_of(self, offset, text=None):
        return (text if text is not None else self.code).count("\n", 0, offset) + 1


def _lex(text):
    out = []
    comments = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            body = text[i:j]
            for k, part in enumerate(body.split("\n")):
                comments.append((line + k, part))
            out.append(re.sub(r"[^\n]", " ", body))
            line += body.count("\n")
            i = j
        elif c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            comments.append((line, text[i:j]))
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j, n - 1)
            body = text[i + 1:j]
            out.append(c + re.sub(r"[^\n]", "x", body) + (text[j] if j > i else ""))
            line += body.count("\n")
            i = j + 1
        else:
            if c == "\n":
                line += 1
            out.append(c)
            i += 1
    return "".join(out), comments


def _pp_lines(code_lines):
    pp = set()
    cont = False
    for i, ln in enumerate(code_lines):
        if cont or ln.lstrip().startswith("#"):
            pp.add(i + 1)
            cont = ln.rstrip().endswith("\\")
        else:
            cont = False
    return pp


_TOKEN_RE = re.compile(r"[A-Za-z_]\w*|\d[\w.]*|->|\.\.\.|<<=|>>=|[-+*/%&|^!=<>]=|&&|\|\||"
                       r"\+\+|--|<<|>>|\S")


def _tokens(code):
    return [(m.group(0), m.start()) for m in _TOKEN_RE.finditer(code)]


def _ident(tok):
    return tok[:1].isalpha() or tok[:1] == "_"


# ---------------------------------------------------------------------------------------------
# file-scope declarations


class Decl:
    """A file-scope declaration or definition: kind is 'function' (a definition), 'prototype',
    'variable' or 'other'."""

    def __init__(self, kind, name, offset, storage):
        self.kind, self.name, self.offset, self.storage = kind, name, offset, storage


_NOT_NAMES = {"if", "while", "for", "switch", "return", "sizeof", "__attribute__",
              "_Alignas", "alignas", "_Static_assert", "static_assert", "__typeof__", "typeof"}


_QUALIFIERS = {"const", "volatile", "restrict", "_Atomic"}


def _declarator_name(toks):
    """The name a declaration (its tokens before `;`, `=` or a body) declares, and whether it
    declares a function: `int f(void)` -> (f, True); `int (*fp)(void)`, `char x[3]`, `int a, b`
    -> (fp/x/a, False); a macro call such as `FOO(x)` -> (None, False)."""
    depth = 0
    k = 0
    while k < len(toks):
        t = toks[k][0]
        if t == "(":
            prev = toks[k - 1][0] if k else ""
            nxt = toks[k + 1][0] if k + 1 < len(toks) else ""
            if depth == 0:
                if prev in _NOT_NAMES:          # __attribute__((...)) and the like
                    k = _match(toks, k, "(", ")") + 1
                    continue
                if nxt == "*":                  # (*name)(...), (*name)[...]
                    for t2, _ in toks[k + 2:]:
                        if _ident(t2) and t2 not in _QUALIFIERS:
                            return t2, False
                        if t2 == ")":
                            break
                    return None, False
                if _ident(prev):
                    return (prev, True) if k >= 2 else (None, False)
            depth += 1
        elif t == ")":
            depth -= 1
        elif depth == 0 and t in ("[", ","):
            prev = toks[k - 1][0] if k else ""
            return (prev, False) if _ident(prev) else (None, False)
        k += 1
    if toks and _ident(toks[-1][0]) and toks[-1][0] not in _QUALIFIERS:
        return toks[-1][0], False
    return None, False


def file_scope_decls(src):
    """The declarations at file scope of one file (preprocessor lines left out)."""
    code = src.code_without_pp()
    toks = _tokens(code)
    decls = []
    cur = []          # tokens of the declaration being read
    i, n = 0, len(toks)

    def finish(kind_hint=None):
        if not cur:
            return
        words = [t for t, _ in cur]
        storage = set(words) & {"static", "extern", "typedef", "inline"}
        if "typedef" in storage:
            cur.clear()
            return
        # Cut the declaration at its initializer, if any.
        head, depth = [], 0
        for t, off in cur:
            if t in ("(", "["):
                depth += 1
            elif t in (")", "]"):
                depth -= 1
            elif t == "=" and depth == 0:
                break
            head.append((t, off))
        name, is_fn = _declarator_name(_declarator_tokens(head))
        if name is None:
            kind = "other"
        elif kind_hint == "body":
            kind = "function" if is_fn else "other"
        else:
            kind = "prototype" if is_fn else "variable"
        off = next((o for t, o in head if t == name), cur[0][1])
        decls.append(Decl(kind, name, off, storage))
        cur.clear()

    while i < n:
        t, off = toks[i]
        if t == ";":
            finish()
        elif t == "{":
            j = _match(toks, i, "{", "}")
            words = [w for w, _ in cur]
            # A function body follows its parameter list; a struct, union or enum body
            # follows a tag, and an initializer follows `=`.
            is_body = bool(cur) and words[-1] == ")" and "=" not in words
            if is_body:
                finish("body")
                i = j + 1
                continue
            # a struct/union/enum body or a braced initializer: part of the declaration
            cur.append(("{...}", off))
            i = j + 1
            continue
        else:
            cur.append((t, off))
        i += 1
    return decls


def _declarator_tokens(head):
    """The tokens of a declaration that can name something: without braced bodies, and for
    one that starts with a tag, what follows the tag or its body behind a placeholder type
    (`struct s { ... } x` -> T x; `struct s *f(void)` -> T * f (void); `struct s` -> none)."""
    if head and head[0][0] in ("struct", "union", "enum"):
        rest = None
        for k, (t, _) in enumerate(head):
            if t == "{...}":
                rest = head[k + 1:]
                break
        if rest is None:
            rest = head[2:]
        return [("T", head[0][1])] + rest if rest else []
    return [x for x in head if x[0] != "{...}"]


def _match(toks, i, open_, close):
    depth = 0
    for j in range(i, len(toks)):
        if toks[j][0] == open_:
            depth += 1
        elif toks[j][0] == close:
            depth -= 1
            if depth == 0:
                return j
    return len(toks) - 1


# ---------------------------------------------------------------------------------------------
# the rules


class Checker:
    def __init__(self, root, max_len=100, tab_width=1):
        self.root = root
        self.max_len = max_len
        self.tab_width = tab_width
        self.findings = []
        self._cache = {}

    def add(self, src, line, rule, msg):
        self.findings.append((src.rel, line, rule, msg))

    def load(self, path):
        path = os.path.abspath(path)
        if path not in self._cache:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            self._cache[path] = Source(path, os.path.relpath(path, self.root), text)
        return self._cache[path]

    def files_under(self, dirs):
        out = []
        for d in dirs:
            top = os.path.join(self.root, d)
            for base, subdirs, files in os.walk(top):
                subdirs.sort()
                out += [os.path.join(base, f) for f in sorted(files) if f.endswith((".c", ".h"))]
        return out

    # -- rules on one file

    def check_file(self, src):
        self.check_lines(src)
        self.check_comments(src)
        self.check_conditions(src)
        self.check_includes(src)

    def check_lines(self, src):
        prev_code = ""
        for no, ln in enumerate(src.lines, 1):
            width = len(ln.expandtabs(self.tab_width)) if self.tab_width != 1 else len(ln)
            if width > self.max_len:
                self.add(src, no, "line-length", "%d columns (at most %d)" % (width,
                                                                           self.max_len))
            if ln != ln.rstrip():
                self.add(src, no, "trailing-space", "white space at the end of the line")
            lead = re.match(r"[ \t]*", ln).group(0)
            code = src.code_lines[no - 1]
            if " \t" in lead:
                self.add(src, no, "indent", "a space before a tab in the indentation")
            elif (lead.startswith(" ") and code.strip() and no not in src.pp
                  and prev_code.endswith((";", "{", "}"))):
                self.add(src, no, "indent", "indented with spaces, not tabs")
            if code.strip():
                prev_code = code.rstrip()

    def check_comments(self, src):
        for no, text in src.comments:
            if re.search(r"\bSPEC\b", text):
                self.add(src, no, "spec-citation",
                         "a comment cites SPEC: cite docs/ or proto/PROTOCOL.md")

    def check_conditions(self, src):
        code = src.code_without_pp()
        for m in re.finditer(r"\b(if|while)\s*\(", code):
            depth, i = 1, m.end()
            while i < len(code) and depth:
                c = code[i]
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                elif c == "=" and depth == 1 and _is_assignment(code, i):
                    self.add(src, src.line_of(i), "assign-cond",
                             "assignment in the condition of `%s`" % m.group(1))
                    break
                i += 1

    def check_includes(self, src):
        top = src.rel.split(os.sep)[0]
        for no, ln in enumerate(src.code_lines, 1):
            m = re.match(r'\s*#\s*include\s*"', ln)
            if not m:
                continue
            raw = src.lines[no - 1]
            end = raw.find('"', m.end())
            inc = raw[m.end():end if end >= 0 else len(raw)]
            target = self.include_top(src, inc)
            if target is None:
                continue
            banned = FORBIDDEN_INCLUDES.get(top, ()) + (NOT_CLI if top != "cli" else ())
            if target in banned and target != top:
                self.add(src, no, "include", '%s/ includes "%s" from %s/' % (top, inc, target))

    def include_top(self, src, inc):
        """The top directory (relative to the root) of what `#include "inc"` names: beside
        the file if it is there, else from the root (-I.)."""
        here = os.path.normpath(os.path.join(os.path.dirname(src.path), inc))
        cand = here if os.path.exists(here) else os.path.normpath(os.path.join(self.root, inc))
        rel = os.path.relpath(cand, self.root)
        if rel.startswith(".."):
            return None
        parts = rel.split(os.sep)
        return parts[0] if len(parts) > 1 else None

    # -- the static rule needs every file

    def check_static(self, sources, headers, public):
        declared_fn, declared_var, header_of = set(), set(), {}
        for h in headers:
            for d in file_scope_decls(h):
                if d.kind == "prototype":
                    declared_fn.add(d.name)
                    header_of.setdefault(d.name, []).append(h)
                elif d.kind == "variable" and "extern" in d.storage:
                    declared_var.add(d.name)
        users = None
        for src in sources:
            if not src.rel.endswith(".c"):
                continue
            for d in file_scope_decls(src):
                if "static" in d.storage or d.name == "main":
                    continue
                line = src.line_of(d.offset)
                if d.kind == "function":
                    if d.name not in declared_fn:
                        self.add(src, line, "static", "function %s() is not static and no "
                                 "header declares it" % d.name)
                        continue
                    if any(h.rel in public for h in header_of[d.name]):
                        continue
                    if users is None:
                        users = self.use_counts()
                    used = users.get(d.name, {})
                    others = sum(k for f, k in used.items() if f != src.rel) - sum(
                        1 for h in header_of[d.name] if used.get(h.rel))
                    if others <= 0:
                        self.add(src, line, "static", "function %s() is used only in this "
                                 "file: make it static and drop it from %s" % (
                                     d.name, ", ".join(h.rel for h in header_of[d.name])))
                elif d.kind == "variable" and "extern" not in d.storage:
                    if d.name not in declared_var:
                        self.add(src, line, "static", "file-scope variable %s is not static "
                                 "and no header declares it extern" % d.name)

    def use_counts(self):
        """name -> {file: occurrences in code} over USE_DIRS (comments and strings left out)."""
        counts = {}
        for path in self.files_under([d for d in USE_DIRS
                                      if os.path.isdir(os.path.join(self.root, d))]):
            src = self.load(path)
            for w in re.findall(r"[A-Za-z_]\w*", src.code):
                per = counts.setdefault(w, {})
                per[src.rel] = per.get(src.rel, 0) + 1
        return counts


def _is_assignment(code, i):
    """Is the '=' at code[i] an assignment (=, +=, <<=...) rather than ==, !=, <=, >=?"""
    nxt = code[i + 1] if i + 1 < len(code) else ""
    prev = code[i - 1] if i else ""
    if nxt == "=" or prev == "=":
        return False
    if prev in "!":
        return False
    if prev in "<>":
        return i >= 2 and code[i - 2] == prev      # <<= and >>= assign; <= and >= compare
    return True


def public_headers(root):
    """The headers `make install` installs (CLIENT_HDRS in the Makefile): their functions are
    the client library's API, used by programs outside the tree."""
    try:
        with open(os.path.join(root, "Makefile")) as f:
            text = f.read()
    except OSError:
        return set()
    m = re.search(r"^CLIENT_HDRS\s*[:+?]?=\s*(.*)$", text, re.M)
    return set(m.group(1).split()) if m else set()


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(prog="checksrc.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*",
                    help="files or directories (default: %s under the root)"
                    % " ".join(DEFAULT_DIRS))
    ap.add_argument("--root", default=os.path.dirname(here),
                    help="the source tree (default: this script's parent directory)")
    ap.add_argument("--max-len", type=int, default=100, help="columns a line may have")
    ap.add_argument("--tab-width", type=int, default=1,
                    help="columns a tab counts for line-length (default 1: characters)")
    ap.add_argument("--list-rules", action="store_true", help="print the rule names and exit")
    args = ap.parse_args(argv)
    if args.list_rules:
        print("\n".join(RULES))
        return 0
    root = os.path.abspath(args.root)
    chk = Checker(root, args.max_len, args.tab_width)
    targets = args.paths or [os.path.join(root, d) for d in DEFAULT_DIRS
                             if os.path.isdir(os.path.join(root, d))]
    files = []
    for p in targets:
        if os.path.isdir(p):
            for base, subdirs, names in os.walk(p):
                subdirs.sort()
                files += [os.path.join(base, f) for f in sorted(names)
                          if f.endswith((".c", ".h"))]
        elif os.path.isfile(p):
            files.append(p)
        else:
            print("checksrc.py: %s: no such file or directory" % p, file=sys.stderr)
            return 2
    sources = [chk.load(f) for f in files]
    for src in sources:
        chk.check_file(src)
    # Declarations come from every header of the checked directories, not only those named.
    headers = [chk.load(f) for f in chk.files_under([d for d in DEFAULT_DIRS
                                                      if os.path.isdir(os.path.join(root, d))])
               if f.endswith(".h")]
    chk.check_static(sources, headers, public_headers(root))
    for rel, line, rule, msg in sorted(set(chk.findings)):
        print("%s:%d: %s: %s" % (rel, line, rule, msg))
    return 1 if chk.findings else 0


if __name__ == "__main__":
    sys.exit(main())

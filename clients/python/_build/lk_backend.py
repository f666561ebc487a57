"""A minimal PEP 517 / PEP 660 build backend for this pure-Python package, standard library only.

Why not setuptools: pip builds in an isolated environment into which it installs the backend's
requirements from an index; without network that fails, and setuptools before 70.1 also needs
the separate `wheel` package. This backend has no requirements, so `pip install
./clients/python` works offline with any pip that supports in-tree backends (pip >= 19.1).

It reads [project] from pyproject.toml (name, version, description, readme, requires-python,
keywords) and packs the `leasekeeper` package: a pure wheel (py3-none-any), an sdist, or an
editable wheel (a .pth file that puts this directory on sys.path).
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "leasekeeper"
SDIST_FILES = ("pyproject.toml", "README.md", "_build/lk_backend.py")


# -- pyproject.toml


def _project():
    path = os.path.join(ROOT, "pyproject.toml")
    try:
        import tomllib  # Python 3.11+
        with open(path, "rb") as f:
            return tomllib.load(f)["project"]
    except ImportError:
        pass
    # Python 3.9/3.10: the subset pyproject.toml uses here (strings and one-line string lists
    # in the [project] table).
    out, table = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = re.match(r"\[([^\]]+)\]$", line)
            if m:
                table = m.group(1).strip()
                continue
            if table != "project":
                continue
            m = re.match(r'([A-Za-z0-9_-]+)\s*=\s*(.+)$', line)
            if not m:
                continue
            key, value = m.group(1), m.group(2).strip()
            if value.startswith("["):
                out[key] = re.findall(r'"((?:[^"\\]|\\.)*)"', value)
            elif value.startswith('"'):
                out[key] = value[1:value.rindex('"')]
    return out


def _meta():
    p = _project()
    name, version = p["name"], p["version"]
    lines = ["Metadata-Version: 2.1", "Name: " + name, "Version: " + version]
    if p.get("description"):
        lines.append("Summary: " + p["description"])
    if p.get("requires-python"):
        lines.append("Requires-Python: " + p["requires-python"])
    if p.get("keywords"):
        lines.append("Keywords: " + ",".join(p["keywords"]))
    body = ""
    readme = p.get("readme")
    if isinstance(readme, str) and os.path.exists(os.path.join(ROOT, readme)):
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(ROOT, readme), encoding="utf-8") as f:
            body = "\n" + f.read()
    return name, version, "\n".join(lines) + "\n" + body


def _dist_name(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def _package_files():
    base = os.path.join(ROOT, PACKAGE)
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if fn.endswith((".py", ".typed")):
                full = os.path.join(dirpath, fn)
                out.append((os.path.relpath(full, ROOT).replace(os.sep, "/"), full))
    return out


# -- wheels


def _record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _dist_info_files(name, version, metadata, editable):
    wheel = ("Wheel-Version: 1.0\nGenerator: lk_backend\nRoot-Is-Purelib: true\n"
             "Tag: py3-none-any\n")
    return {"METADATA": metadata, "WHEEL": wheel, "top_level.txt": PACKAGE + "\n"}


def _write_wheel(directory, editable):
    name, version, metadata = _meta()
    dist = _dist_name(name)
    info = "%s-%s.dist-info" % (dist, version)
    filename = "%s-%s-py3-none-any.whl" % (dist, version)
    entries = []
    if editable:
        entries.append(("__editable__.%s.pth" % dist, (ROOT + "\n").encode("utf-8")))
    else:
        for arc, full in _package_files():
            with open(full, "rb") as f:
                entries.append((arc, f.read()))
    for fn, text in _dist_info_files(name, version, metadata, editable).items():
        entries.append(("%s/%s" % (info, fn), text.encode("utf-8")))
    record = "".join("%s,%s,%d\n" % (arc, _record_hash(data), len(data)) for arc, data in entries)
    record += "%s/RECORD,,\n" % info
    entries.append(("%s/RECORD" % info, record.encode("utf-8")))
    path = os.path.join(directory, filename)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in entries:
            zi = zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return filename


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    name, version, metadata = _meta()
    info = "%s-%s.dist-info" % (_dist_name(name), version)
    os.makedirs(os.path.join(metadata_directory, info), exist_ok=True)
    for fn, text in _dist_info_files(name, version, metadata, False).items():
        with open(os.path.join(metadata_directory, info, fn), "w", encoding="utf-8") as f:
            f.write(text)
    return info


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, editable=False)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, editable=True)


# -- sdist


def build_sdist(sdist_directory, config_settings=None):
    name, version, metadata = _meta()
    base = "%s-%s" % (_dist_name(name), version)
    filename = base + ".tar.gz"
    files = [(f, os.path.join(ROOT, f)) for f in SDIST_FILES if os.path.exists(os.path.join(ROOT, f))]
    files += _package_files()
    tests = os.path.join(ROOT, "tests")
    if os.path.isdir(tests):
        for fn in sorted(os.listdir(tests)):
            if fn.endswith(".py"):
                files.append(("tests/" + fn, os.path.join(tests, fn)))
    now = int(time.time())

    def add(tar, arc, data):
        ti = tarfile.TarInfo("%s/%s" % (base, arc))
        ti.size, ti.mtime, ti.mode = len(data), now, 0o644
        tar.addfile(ti, io.BytesIO(data))

    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as tar:
        add(tar, "PKG-INFO", metadata.encode("utf-8"))
        for arc, full in files:
            with open(full, "rb") as f:
                add(tar, arc, f.read())
    return filename

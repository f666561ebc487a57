"""deploy/ and the Dockerfile, checked offline.

- Every kustomization under deploy/ is rendered and each object validated against the
  Kubernetes schemas (npm: kubernetes-models, yaml) by tests/deploy/validate.mjs, which also
  asserts the leasekeeper invariants (native sidecar layout, shared emptyDir, preStop drain,
  grace period vs shutdown_timeout, probes, mounts of the config and secrets) and runs
  `$LK_BIN check-config` on the ConfigMap's config.
- validate.mjs is shown to catch mistakes: each of a list of small breakages of a copy of
  deploy/ must make it fail with the expected message.
- The Secret: deploy/ as committed applies no key at all (kustomize stops until the operator
  made the files); the rendered Secret carries exactly the key written into the copy's
  deploy/base/secrets/, and a key found in the repository or a patterned one is refused.
- The example Redis (deploy/examples/redis): its container's own start script, run with a real
  redis-server on loopback, requires the rendered Secret's password, and an agent run with the
  rendered ConfigMap's config (addresses and paths moved to the test's) becomes ready on it.
- deploy/monitoring: `promtool check rules` and `promtool test rules` pass, each alert's unit
  tests fail when the alert is disabled, and every metric, label and label value that the rules,
  their unit tests and the Grafana dashboard use is one a real agent exports (its /metrics,
  scraped in the test); the dashboard's structure and PromQL are checked. Then a real
  Prometheus scrapes two agents through a handoff: every rule evaluates without error, no alert
  fires, and the panels show the new leader, its token, the tenure and the release.
  promtool and prometheus (Debian package prometheus, installed by `make deps`) are required:
  without them these tests fail.
- The Dockerfile is read (no Docker engine is needed): its runtime stage installs the package of
  every shared library the agent links, its build stage the -dev package of every pkg-config
  module the Makefile uses, and it runs as a numeric non-root user.

The npm packages are installed once into tests/deploy/node_modules (`npm ci`, pinned by
tests/deploy/package-lock.json) and reused while package.json and the lock are unchanged.
Skipped only when `node` is not installed (Debian: apt-get install nodejs npm).
"""

import base64
import concurrent.futures
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import secrets as secrets_mod
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

from harness import (REPO_ROOT, LKTestCase, RespClient, RespError, free_port, lk_bin,
                     lock_config, redis_server_bin, wait_until)

DEPLOY_TESTS = os.path.join(REPO_ROOT, "tests", "deploy")
MONITORING = os.path.join(REPO_ROOT, "deploy", "monitoring")
RULES = os.path.join(MONITORING, "leasekeeper-rules.yaml")
RULES_TESTS = os.path.join(MONITORING, "leasekeeper-rules.test.yaml")
DASHBOARD = os.path.join(MONITORING, "leasekeeper-dashboard.json")
VALIDATE = os.path.join(DEPLOY_TESTS, "validate.mjs")
NODE_MODULES = os.path.join(DEPLOY_TESTS, "node_modules")
STAMP = os.path.join(NODE_MODULES, ".leasekeeper-install-stamp")


def node_modules_ready():
    """Install the pinned npm packages unless the same install is already there."""
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        with open(os.path.join(DEPLOY_TESTS, name), "rb") as f:
            h.update(f.read())
    h.update(subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.encode())
    want = h.hexdigest()
    lock_path = os.path.join(tempfile.gettempdir(), "leasekeeper-deploy-npm.lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once install only once
        try:
            with open(STAMP) as f:
                if f.read().strip() == want:
                    return
        except OSError:
            pass
        npm = shutil.which("npm")
        if not npm:
            raise AssertionError("node is installed but npm is not (Debian: apt-get install npm)")
        print("test_deploy: npm ci in tests/deploy (once)", file=sys.stderr, flush=True)
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=DEPLOY_TESTS,
                           capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError("npm ci failed in tests/deploy:\n%s%s" % (r.stdout, r.stderr))
        with open(STAMP, "w") as f:
            f.write(want + "\n")


def run_validate(repo, extra_env=None, dump=None):
    env = dict(os.environ)
    env["LK_BIN"] = lk_bin()
    env.update(extra_env or {})
    cmd = ["node", VALIDATE, "--repo", repo, "--lk-bin", lk_bin()]
    if dump:
        cmd += ["--dump", dump]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                       stdin=subprocess.DEVNULL)
    m = re.search(r"^RESULT (.*)$", r.stdout, re.M)
    result = json.loads(m.group(1)) if m else None
    return r.returncode, r.stdout + r.stderr, result


SECRET_FILES = ("auth-key", "redis-password")


def copy_deploy(dest, secrets=True):
    """A copy of deploy/ as git has it (committed files and new ones not ignored), without
    whatever Secret files this working tree holds; with secrets=True, fresh random ones, as an
    operator makes them (deploy/README.md). Returns {file name: value written}."""
    r = subprocess.run(["git", "-C", REPO_ROOT, "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard", "deploy"], capture_output=True, text=True, check=True)
    for rel in r.stdout.split("\0"):
        if rel and os.path.isfile(os.path.join(REPO_ROOT, rel)):
            os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(os.path.join(REPO_ROOT, rel), os.path.join(dest, rel))
    sdir = os.path.join(dest, "deploy", "base", "secrets")
    for name in SECRET_FILES:
        assert not os.path.exists(os.path.join(sdir, name)), "git does not ignore secrets/" + name
    if not secrets:
        return {}
    values = {"auth-key": secrets_mod.token_hex(32), "redis-password": secrets_mod.token_hex(24)}
    os.makedirs(sdir, exist_ok=True)
    for name, value in values.items():
        with open(os.path.join(sdir, name), "w") as f:
            f.write(value + "\n")  # as `openssl rand -hex N > file` writes it
    return values


def secret_value(obj, key):
    return base64.b64decode("".join(obj["data"][key].split())).decode()


def known_key_from_repo():
    """A 64-hex-digit string (not a pattern) from a file git tracks: a key anyone can read."""
    r = subprocess.run(["git", "-C", REPO_ROOT, "grep", "-h", "-o", "-I", "-E",
                        r"\b[0-9a-f]{64}\b"], capture_output=True, text=True)
    for k in r.stdout.split():
        if len(set(k)) >= 12 and k not in (k[:32] * 2, k[:16] * 4):
            return k
    raise AssertionError("no 64-hex-digit string in the repository to use as a known key")


class DeployManifests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not shutil.which("node"):
            msg = ("test_deploy: skipped: `node` is not installed, so the manifests under deploy/ "
                   "cannot be validated (Debian: apt-get install nodejs npm)")
            print(msg, file=sys.stderr, flush=True)
            raise unittest.SkipTest(msg)
        node_modules_ready()

    KUSTOMIZATIONS = {
        # name: (mode, object kinds it must render)
        "deploy/base": ("native", {"Deployment", "ConfigMap", "Secret", "PodDisruptionBudget"}),
        "deploy/classic-sidecar": ("classic", {"Deployment", "ConfigMap", "Secret",
                                               "PodDisruptionBudget"}),
        "deploy/examples/redis": ("native", {"Deployment", "ConfigMap", "Secret",
                                             "PodDisruptionBudget", "Service"}),
        "deploy/monitoring": ("monitoring", {"Service", "ServiceMonitor", "PrometheusRule",
                                             "ConfigMap"}),
    }

    def render_copy(self, tmp, secrets=True, extra_env=None):
        values = copy_deploy(tmp, secrets)
        dump = os.path.join(tmp, "rendered.json")
        rc, out, result = run_validate(tmp, extra_env, dump=dump)
        objs = None
        if os.path.exists(dump):
            with open(dump) as f:
                objs = json.load(f)
        return values, rc, out, result, objs

    def test_manifests_valid_and_invariants_hold(self):
        with tempfile.TemporaryDirectory(prefix="lk-deploy-") as tmp:
            _, rc, out, result, _ = self.render_copy(tmp)
        self.assertEqual(rc, 0, "validate.mjs failed:\n" + out)
        self.assertIsNotNone(result, "no RESULT line:\n" + out)
        self.assertEqual(result["failures"], 0, out)
        ks = result["kustomizations"]
        self.assertEqual(sorted(ks), sorted(self.KUSTOMIZATIONS))
        for name, (mode, kinds) in self.KUSTOMIZATIONS.items():
            info = ks[name]
            self.assertEqual(info["mode"], mode, name)
            got = {o.split("/")[0] for o in info["objects"]}
            self.assertEqual(kinds - got, set(), "%s renders no %s: %s" % (name, kinds - got,
                                                                          info["objects"]))
            if shutil.which("kubectl"):
                # validate.mjs's own rendering (generators, hashed names) is kustomize's.
                self.assertEqual(info["kubectl"], "same objects", name + ":\n" + out)
            print("%s: %d objects, kubectl kustomize: %s"
                  % (name, len(info["objects"]), info["kubectl"]), file=sys.stderr)
        self.assertIn("Deployment/redis", ks["deploy/examples/redis"]["objects"])
        self.assertIn("Service/redis", ks["deploy/examples/redis"]["objects"])
        self.assertGreaterEqual(result["objects_validated"], 18)
        # check-config really ran on the config of each of the three renderings with an app.
        self.assertEqual(len(result["check_config"]), 3, out)
        for c in result["check_config"]:
            self.assertIn(": ok (", c["output"])

    def test_committed_deploy_applies_no_key_until_the_operator_makes_one(self):
        with tempfile.TemporaryDirectory(prefix="lk-deploy-") as tmp:
            _, rc, out, result, _ = self.render_copy(tmp, secrets=False,
                                                     extra_env={"LK_DEPLOY_KUBECTL": "0"})
            self.assertNotEqual(rc, 0, out)
            for name in ("deploy/base", "deploy/classic-sidecar", "deploy/examples/redis"):
                self.assertIn("FAIL %s: render: deploy/base/kustomization.yaml: secretGenerator "
                              "myapp-leasekeeper: secrets/auth-key does not exist" % name, out)
            # deploy/monitoring has no Secret of its own: it renders.
            self.assertIn(".... deploy/monitoring: rendered Service/", out)
            if shutil.which("kubectl"):
                r = subprocess.run(["kubectl", "kustomize", os.path.join(tmp, "deploy", "base")],
                                   capture_output=True, text=True, timeout=60)
                self.assertNotEqual(r.returncode, 0, "kubectl kustomize rendered a Secret "
                                    "from files the repository does not have:\n" + r.stdout)
                self.assertIn("secrets/auth-key", r.stderr)
        # No manifest under deploy/ is a Secret with values in it.
        r = subprocess.run(["git", "-C", REPO_ROOT, "ls-files", "--cached", "--others",
                            "--exclude-standard", "deploy"], capture_output=True, text=True,
                           check=True)
        for rel in r.stdout.split():
            if rel.endswith((".yaml", ".yml")):
                with open(os.path.join(REPO_ROOT, rel)) as f:
                    self.assertNotRegex(f.read(), r"(?m)^kind: Secret$", rel)

    def test_rendered_secret_is_the_operators_key_and_a_new_key_is_a_new_secret(self):
        names = []
        for _ in range(2):
            with tempfile.TemporaryDirectory(prefix="lk-deploy-") as tmp:
                values, rc, out, _, objs = self.render_copy(tmp, extra_env={"LK_DEPLOY_KUBECTL": "0"})
            self.assertEqual(rc, 0, out)
            for name in ("deploy/base", "deploy/classic-sidecar", "deploy/examples/redis"):
                secrets = [o for o in objs[name] if o["kind"] == "Secret"]
                self.assertEqual(len(secrets), 1, name)
                sec = secrets[0]
                self.assertEqual(secret_value(sec, "auth-key").strip(), values["auth-key"])
                self.assertEqual(secret_value(sec, "redis-password").strip(), values["redis-password"])
                self.assertRegex(sec["metadata"]["name"], r"^myapp-leasekeeper-[a-z0-9]{10}$")
                refs = {v["secret"]["secretName"] for o in objs[name] if o["kind"] == "Deployment"
                        for v in o["spec"]["template"]["spec"]["volumes"] if "secret" in v}
                self.assertEqual(refs, {sec["metadata"]["name"]}, name)
            names.append(sec["metadata"]["name"])
        self.assertNotEqual(names[0], names[1], "a new key must roll the pods (a new Secret name)")

    # Each entry: ([(file under deploy/, text to replace or None to write the file, new text)],
    # expected in validate.mjs's output). The short form (file, old, new, expected) is one edit.
    MUTATIONS = [
        ("base/deployment.yaml", "readinessProbe:", "readinesProbe:",
         "readinesProbe: unknown field"),
        ("base/deployment.yaml", "replicas: 3", 'replicas: "3"', "must be integer"),
        ("base/deployment.yaml", "          restartPolicy: Always\n", "",
         "the agent needs restartPolicy: Always"),
        ("base/deployment.yaml", "terminationGracePeriodSeconds: 30",
         "terminationGracePeriodSeconds: 26", "terminationGracePeriodSeconds (26s) < shutdown_timeout"),
        ("base/deployment.yaml", '"drain", "--timeout"', '"drian", "--timeout"', "preStop must run"),
        ("base/deployment.yaml", "path: /readyz", "path: /ready",
         "readinessProbe must be httpGet /readyz"),
        ("base/deployment.yaml", "defaultMode: 288  # 0440 (octal", "defaultMode: 0440  # (octal",
         "reads differently as YAML 1.1 and 1.2"),
        ("base/deployment.yaml", "- key: redis-password", "- key: redis-pasword",
         "has no key redis-pasword"),
        ("base/deployment.yaml", "              mountPath: /run/leasekeeper\n              readOnly: true",
         "              mountPath: /run/lk\n              readOnly: true",
         "must mount the agent's emptyDir at /run/leasekeeper"),
        ("base/deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false",
         "readOnlyRootFilesystem"),
        ("base/deployment.yaml", "fieldPath: metadata.name", "fieldPath: metadata.namespace",
         "POD_NAME must come from metadata.name"),
        ("base/deployment.yaml", "      labels:\n        app.kubernetes.io/name: myapp\n      annotations:",
         "      labels:\n        app.kubernetes.io/name: other\n      annotations:",
         "spec.selector does not match"),
        ("base/deployment.yaml", "- name: leasekeeper-client", "- name: app",
         "container names repeat"),
        ("base/configmap.yaml", "    log_format: json\n", "    log_format: json\n    log_fromat: json\n",
         "check-config failed"),
        ("base/configmap.yaml", '"0.0.0.0:9440"', '"127.0.0.1:9440"', "http_listen"),
        ("base/configmap.yaml", "stepdown_timeout: 15s", "stepdown_timeout: 22s",
         "stepdown_timeout + release_timeout"),
        ("base/kustomization.yaml", "kind: Kustomization\n", "kind: Kustomization\nnamePrefix: x-\n",
         "not supported by validate.mjs"),
        ("classic-sidecar/sidecar-as-container.yaml", "value: leasekeeper", "value: agent",
         "test failed"),
        # The Secret: not 64 hex, a pattern, a key from the repository, a literal, a manifest.
        ("base/secrets/auth-key", None, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n",
         "is not 64 hex characters"),
        ("base/secrets/auth-key", None, "0123456789abcdef" * 4 + "\n",
         "repeats every 16 digits: a pattern, not a random key"),
        ("base/secrets/auth-key", None, "{known_key}\n", "is a known key: it is written in the repository's"),
        ("base/kustomization.yaml", "    files:\n", "    literals:\n      - x=y\n    files:\n",
         "a literal is a value written in the repository"),
        ([("base/kustomization.yaml", "  - pdb.yaml\n", "  - pdb.yaml\n  - secret.yaml\n"),
          ("base/kustomization.yaml", "  - name: myapp-leasekeeper\n", "  - name: unused\n"),
          ("base/secret.yaml", None, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: myapp-leasekeeper\n"
           "stringData:\n  auth-key: \"{random_key}\"\n  redis-password: x\n")],
         "Secret myapp-leasekeeper is written in a manifest"),
        # The PodDisruptionBudget.
        ("base/pdb.yaml", "maxUnavailable: 1", "maxUnavailable: 0",
         "allows 0 of 3 pods to be evicted at once, want 1"),
        ("base/pdb.yaml", "maxUnavailable: 1", "minAvailable: 3", "allows 0 of 3 pods"),
        ("base/pdb.yaml", "  unhealthyPodEvictionPolicy: AlwaysAllow\n", "",
         "unhealthyPodEvictionPolicy must be AlwaysAllow"),
        ("base/pdb.yaml", "matchLabels:\n      app.kubernetes.io/name: myapp",
         "matchLabels:\n      app.kubernetes.io/name: myap",
         "want exactly one PodDisruptionBudget selecting the pods of Deployment/myapp, found 0"),
        # The example Redis.
        ("examples/redis/redis.yaml", "- key: redis-password", "- key: auth-key",
         "does not read the agent's password_file"),
        ("examples/redis/redis.yaml", "targetPort: redis", "targetPort: 6380", "is no port of Deployment/redis"),
        ("examples/redis/redis.yaml", "    - name: redis\n      port: 6379", "    - name: redis\n      port: 6380",
         "Service/redis has no port 6379"),
        ("examples/redis/redis.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false",
         "Deployment/redis: container redis: readOnlyRootFilesystem"),
        ("examples/redis/redis.yaml", "      labels:\n        app.kubernetes.io/name: redis\n        app.kubernetes.io/part-of: myapp\n    spec:",
         "      labels:\n        app.kubernetes.io/name: myapp\n        app.kubernetes.io/part-of: myapp\n    spec:",
         "also matches the pods of Deployment/redis"),
        # deploy/monitoring.
        ("monitoring/prometheusrule.yaml", "for: 2m", "for: 3m",
         "spec.groups differs from leasekeeper-rules.yaml"),
        ("monitoring/servicemonitor.yaml", "- port: lk-http", "- port: http",
         "port http is not a port name of Service/myapp-leasekeeper-metrics"),
        ("monitoring/servicemonitor.yaml", "scrapeTimeout: 5s", "scrapeTimout: 5s",
         "spec.endpoints[0].scrapeTimout: unknown field"),
        ("monitoring/service.yaml", "targetPort: lk-http", "targetPort: metrics",
         "targetPort metrics is not the agent's HTTP port"),
        ("monitoring/service.yaml", "  publishNotReadyAddresses: true\n", "",
         "publishNotReadyAddresses must be true"),
        ("monitoring/leasekeeper-dashboard.json", None, "{not json", "leasekeeper-dashboard.json: "),
    ]

    def test_validator_catches_mistakes(self):
        """Each breakage of a copy of deploy/ must fail validate.mjs with its own message."""
        subst = {"known_key": known_key_from_repo(), "random_key": secrets_mod.token_hex(32)}

        def one(mutation):
            edits, expect = (mutation[0], mutation[1]) if isinstance(mutation[0], list) \
                else ([mutation[:3]], mutation[3])
            with tempfile.TemporaryDirectory(prefix="lk-deploy-mut-") as tmp:
                copy_deploy(tmp)
                for rel, old, new in edits:
                    new = new.replace("{known_key}", subst["known_key"]) \
                             .replace("{random_key}", subst["random_key"])
                    path = os.path.join(tmp, "deploy", rel)
                    if old is None:
                        text = ""
                    else:
                        with open(path) as f:
                            text = f.read()
                        if old not in text:
                            return mutation, None, "mutation no longer applies: %r not in deploy/%s" % (old, rel)
                    with open(path, "w") as f:
                        f.write(new if old is None else text.replace(old, new, 1))
                # kubectl's rendering is covered above; here only validate.mjs is under test.
                rc, out, _ = run_validate(tmp, {"LK_DEPLOY_KUBECTL": "0"})
                return mutation, rc, out

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
            results = list(ex.map(one, self.MUTATIONS))
        for mutation, rc, out in results:
            expect = mutation[-1]
            with self.subTest(mutation=str(mutation[0])[:60], expect=expect[:40]):
                self.assertIsNotNone(rc, out)
                self.assertNotEqual(rc, 0, "validate.mjs accepted %r:\n%s" % (mutation, out))
                self.assertIn(expect, out)


# ---- deploy/monitoring: alert rules and dashboard ------------------------------------------

def promtool():
    path = shutil.which("promtool")
    if not path:
        raise AssertionError("promtool is not installed, so the alert rules in deploy/monitoring "
                             "cannot be checked: run `make deps` (Debian package prometheus)")
    return path


def http_get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def read_yaml(path):
    """A YAML file as Python objects, read by the `yaml` npm package that validate.mjs uses
    (PyYAML is not in Python's standard library)."""
    r = subprocess.run(["node", "--input-type=module", "-e",
                        "import YAML from 'yaml'; import fs from 'node:fs';"
                        "process.stdout.write(JSON.stringify(YAML.parse(fs.readFileSync(process.argv[1], 'utf8'))))",
                        path], capture_output=True, text=True, cwd=DEPLOY_TESTS, check=True)
    return json.loads(r.stdout)


def exposition_labels(text):
    """{sample name: {label: set of values}} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$', line)
        assert m, "cannot read exposition line %r" % line
        labels = out.setdefault(m.group(1), {})
        for k, v in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|[^"\\])*)"', m.group(2) or ""):
            labels.setdefault(k, set()).add(v)
    return out


# Labels Prometheus itself adds to every series of a target: job and instance always, namespace
# and pod from Kubernetes service discovery (ServiceMonitor; the usual kubernetes-pods job).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "endpoint"}
# Labels whose values are fixed by the agent (not by the config): a typo in a value is an error.
ENUM_LABELS = {"reason", "outcome", "kind", "after"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "bool", "offset", "inf", "nan", "atan2"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile"}  # may be followed by `by (...)` before their "("
TOKEN = re.compile(r'\s*(?:(?P<str>"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`)'
                   r'|(?P<num>[0-9][0-9.]*(?:e[+-]?[0-9]+)?[a-z]*)'
                   r'|(?P<id>[a-zA-Z_:][a-zA-Z0-9_:]*)'
                   r'|(?P<op>=~|!~|!=|==|>=|<=|[{}()\[\],=<>+\-*/^%:@]))')


def promql_problems(expr, exported):
    """What in a PromQL expression names a metric, label or label value the agent does not
    export (exported: exposition_labels() of a real scrape). A small tokenizer, not a parser:
    promtool checks the syntax; this checks the names."""
    toks, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            if expr[pos:].strip() == "":
                break
            return ["cannot read %r at %r" % (expr, expr[pos:pos + 20])]
        toks.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    problems, metrics, grouped = [], [], []
    i, depth_sq = 0, 0
    while i < len(toks):
        kind, val = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if val == "[":
            depth_sq += 1
        elif val == "]":
            depth_sq -= 1
        elif depth_sq or kind != "id":
            pass
        elif val in GROUPING and nxt == "(":
            j = i + 2
            while toks[j][1] != ")":
                if toks[j][0] == "id":
                    grouped.append(toks[j][1])
                j += 1
            i = j
        elif val in PROMQL_KEYWORDS or val in AGGREGATIONS or nxt == "(":
            pass  # an operator keyword, or a function / aggregation
        else:
            metrics.append(val)
            if val not in exported:
                problems.append("%s is not a metric the agent exports" % val)
            if nxt == "{":
                j = i + 2
                while toks[j][1] != "}":
                    if toks[j][0] == "id":
                        label, op, value = toks[j][1], toks[j + 1][1], toks[j + 2][1][1:-1]
                        have = exported.get(val, {})
                        if label not in have and label not in TARGET_LABELS:
                            problems.append("%s has no label %s" % (val, label))
                        elif label in ENUM_LABELS and op == "=" and value not in have.get(label, ()):
                            problems.append("%s{%s} is never %r (it is one of %s)"
                                            % (val, label, value, sorted(have.get(label, ()))))
                        j += 3
                    else:
                        j += 1
                i = j
        i += 1
    have = set(TARGET_LABELS)
    for name in metrics:
        have |= set(exported.get(name, {}))
    for label in grouped:
        if label not in have:
            problems.append("groups by %s, which none of %s has" % (label, metrics))
    return problems


def grafana_to_promql(expr):
    """A dashboard query as Prometheus would get it: Grafana's variables filled in."""
    expr = re.sub(r"\$__(rate_)?interval|\$__range", "5m", expr)
    return re.sub(r"\$\{?([a-zA-Z_]\w*)\}?", ".*", expr)


def dashboard_queries(dash):
    """[(where, PromQL)] of every panel target and every query variable."""
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append(("panel %d %r target %s" % (p["id"], p["title"], t.get("refId")),
                        grafana_to_promql(t["expr"])))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.match(r"^label_values\((.*),\s*([a-zA-Z_]\w*)\)$", q)
            assert m, "variable %s: only label_values(selector, label) queries are expected: %r" % (v["name"], q)
            out.append(("variable %s" % v["name"], grafana_to_promql(m.group(1))))
            out.append(("variable %s (label)" % v["name"],
                        "sum by (%s) (%s)" % (m.group(2), grafana_to_promql(m.group(1)))))
    return out


class AlertRules(unittest.TestCase):
    """deploy/monitoring/leasekeeper-rules.yaml, by promtool."""

    @classmethod
    def setUpClass(cls):
        cls.promtool = promtool()
        if not shutil.which("node"):  # not a skip: these checks have no other tool
            raise AssertionError("node is not installed, and read_yaml() needs it: run `make deps`")
        node_modules_ready()
        cls.rules = read_yaml(RULES)
        cls.alerts = [r["alert"] for g in cls.rules["groups"] for r in g["rules"] if "alert" in r]

    def test_rules_pass_promtool_check(self):
        r = subprocess.run([self.promtool, "check", "rules", RULES], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        n = sum(len(g["rules"]) for g in self.rules["groups"])
        self.assertIn("SUCCESS: %d rules found" % n, r.stdout)
        self.assertGreaterEqual(len(self.alerts), 8)

    def test_rule_unit_tests_pass(self):
        r = subprocess.run([self.promtool, "test", "rules", RULES_TESTS], capture_output=True,
                           text=True, timeout=60, cwd=MONITORING)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS", r.stdout)

    def test_every_alert_has_a_case_that_fires_and_one_that_must_not(self):
        tests = read_yaml(RULES_TESTS)
        fires, silent = set(), set()
        for t in tests["tests"]:
            for a in t.get("alert_rule_test", []):
                (fires if a.get("exp_alerts") else silent).add(a["alertname"])
        self.assertEqual(sorted(set(self.alerts) - fires), [], "alerts never expected to fire")
        self.assertEqual(sorted(set(self.alerts) - silent), [], "alerts never expected to stay silent")

        # And the firing cases really depend on each rule: with one alert's expression replaced
        # by one that never fires, `promtool test rules` must fail.
        def disabled(alert):
            with tempfile.TemporaryDirectory(prefix="lk-rules-") as tmp:
                with open(RULES) as f:
                    text = f.read()
                block = re.search(r"(?ms)^      - alert: %s\n.*?(?=^      - alert: |\Z)" % alert, text)
                self.assertIsNotNone(block, alert)
                new = re.sub(r"(?ms)^        expr: (\|\n(?:          .*\n)+|.*\n)",
                             "        expr: vector(0) > 1\n", block.group(0), count=1)
                self.assertNotEqual(new, block.group(0), alert)
                with open(os.path.join(tmp, "leasekeeper-rules.yaml"), "w") as f:
                    f.write(text.replace(block.group(0), new))
                shutil.copy(RULES_TESTS, tmp)
                return alert, subprocess.run([self.promtool, "test", "rules", "leasekeeper-rules.test.yaml"],
                                             capture_output=True, text=True, timeout=60, cwd=tmp)
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
            for alert, r in ex.map(disabled, self.alerts):
                with self.subTest(alert=alert):
                    self.assertNotEqual(r.returncode, 0, "the unit tests pass with %s disabled" % alert)
                    self.assertIn("alertname: %s" % alert, r.stdout + r.stderr)


class Dashboard(unittest.TestCase):
    """deploy/monitoring/leasekeeper-dashboard.json: a Grafana dashboard whose queries parse."""

    @classmethod
    def setUpClass(cls):
        with open(DASHBOARD) as f:
            cls.dash = json.load(f)

    def test_structure(self):
        d = self.dash
        self.assertEqual(d["uid"], "leasekeeper")
        self.assertTrue(d["title"])
        self.assertGreaterEqual(d["schemaVersion"], 36)
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids repeat")
        variables = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual(len(variables), len(d["templating"]["list"]), "variable names repeat")
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        cells = {}
        for p in d["panels"]:
            g = p["gridPos"]
            self.assertTrue(0 <= g["x"] and g["w"] >= 1 and g["x"] + g["w"] <= 24 and g["h"] >= 1, p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    self.assertNotIn((x, y), cells, "panels %r and %r overlap" % (cells.get((x, y)), p["title"]))
                    cells[(x, y)] = p["title"]
            if p["type"] == "row":
                continue
            self.assertTrue(p.get("description"), "panel %r needs a description" % p["title"])
            self.assertEqual(p["datasource"], {"type": "prometheus", "uid": "${datasource}"}, p["title"])
            refs = [t["refId"] for t in p["targets"]]
            self.assertTrue(refs, "panel %r has no query" % p["title"])
            self.assertEqual(len(refs), len(set(refs)), p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${datasource}", p["title"])
                for var in re.findall(r"\$\{?([a-zA-Z_]\w*)", t["expr"]):
                    self.assertTrue(var.startswith("__") or var in variables,
                                    "panel %r uses $%s, which is not a variable" % (p["title"], var))
        self.assertGreaterEqual(len([p for p in d["panels"] if p["type"] != "row"]), 10)

    def test_queries_pass_promtool(self):
        """Every query, variables filled in as Grafana would, is valid PromQL to promtool."""
        queries = dashboard_queries(self.dash)
        with tempfile.TemporaryDirectory(prefix="lk-dash-") as tmp:
            path = os.path.join(tmp, "dashboard-queries.yaml")
            with open(path, "w") as f:
                f.write("groups:\n  - name: dashboard\n    rules:\n")
                for i, (where, q) in enumerate(queries):
                    f.write("      # %s\n      - record: dashboard:query_%d\n        expr: %s\n"
                            % (where, i, json.dumps(q)))
            r = subprocess.run([promtool(), "check", "rules", path], capture_output=True,
                               text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS: %d rules found" % len(queries), r.stdout)


class ExportedMetrics(LKTestCase):
    """The rules, their unit tests' input series and the dashboard name only metrics, labels and
    label values that a real agent's /metrics has."""

    def setUp(self):
        super().setUp()
        promtool()  # the rules are promtool's to check; without it this test means little
        if not shutil.which("node"):
            raise AssertionError("node is not installed, and read_yaml() needs it: run `make deps`")
        node_modules_ready()

    def scrape(self):
        redis = self.start_redis()
        port = free_port()
        agent = self.start_agent("pod-a", redis, locks=[lock_config("scheduler", ttl="1s")],
                                 http_listen="127.0.0.1:%d" % port)
        self.leader_app(agent, "scheduler")
        status, text = http_get("http://127.0.0.1:%d/metrics" % port)
        self.assertEqual(status, 200, text)
        return exposition_labels(text)

    def test_rules_tests_and_dashboard_use_only_exported_names(self):
        exported = self.scrape()
        self.assertIn("leasekeeper_lock_held", exported)
        # The checker itself: it must see what is wrong in these.
        for bad, want in [("leasekeeper_backend_down == 1", "not a metric the agent exports"),
                          ('leasekeeper_lock_lost_total{reason="timeout"}', "is never 'timeout'"),
                          ('leasekeeper_lock_held{backend="main"}', "has no label backend"),
                          ("sum by (lock, backend) (leasekeeper_lock_held)", "groups by backend"),
                          ("rate(leasekeeper_release_duration_seconds[5m])", "not a metric")]:
            self.assertTrue(any(want in p for p in promql_problems(bad, exported)),
                            "the checker misses %r: %s" % (bad, promql_problems(bad, exported)))
        self.assertEqual(promql_problems(
            'sum by (namespace, lock, reason) (increase(leasekeeper_lock_lost_total{reason="taken"}[5m]))'
            ' and on (lock) leasekeeper_lock_held == 1', exported), [])

        problems = []
        rules = read_yaml(RULES)
        for g in rules["groups"]:
            for r in g["rules"]:
                problems += ["rule %s: %s" % (r.get("alert") or r.get("record"), p)
                             for p in promql_problems(r["expr"], exported)]
        for t in read_yaml(RULES_TESTS)["tests"]:
            for series in t["input_series"]:
                problems += ["rules test input %s: %s" % (series["series"], p)
                             for p in promql_problems(series["series"], exported)]
        with open(DASHBOARD) as f:
            dash = json.load(f)
        queries = dashboard_queries(dash)
        for where, q in queries:
            problems += ["dashboard %s: %s" % (where, p) for p in promql_problems(q, exported)]
        self.assertEqual(problems, [])
        used = {n for _, q in queries for n in re.findall(r"\bleasekeeper_\w+", q)}
        print("dashboard: %d queries on %d metrics; rules: %d" % (len(queries), len(used),
              sum(len(g["rules"]) for g in rules["groups"])), file=sys.stderr)


class LivePrometheus(LKTestCase):
    """A real Prometheus (Debian's prometheus package, which also has promtool) scrapes two real
    agents every second through a handoff of one lock: the rules evaluate without errors, no
    alert fires, and each dashboard panel shows what happened."""

    def prometheus(self, targets):
        binary = shutil.which("prometheus")
        if not binary:
            raise AssertionError("prometheus is not installed: run `make deps` (Debian package "
                                 "prometheus)")
        port = free_port()
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\n"
                    "rule_files: [%s]\nscrape_configs:\n  - job_name: myapp\n    static_configs:\n"
                    % json.dumps(RULES))
            for pod, target in targets:
                f.write("      - targets: [%s]\n        labels: {namespace: prod, pod: %s}\n"
                        % (json.dumps(target), pod))
        log = open(os.path.join(self.tmp, "prometheus.log"), "w")
        self.addCleanup(log.close)
        proc = subprocess.Popen([binary, "--config.file=" + cfg,
                                 "--storage.tsdb.path=" + os.path.join(self.tmp, "tsdb"),
                                 "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (proc.terminate(), proc.wait(10)))
        base = "http://127.0.0.1:%d" % port
        wait_until(lambda: http_get(base + "/-/ready")[0] == 200, what="prometheus to be ready")
        return base

    def query(self, base, q):
        status, body = http_get(base + "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
        doc = json.loads(body) if body else {}
        self.assertEqual((status, doc.get("status")), (200, "success"), "%s: %s" % (q, body))
        return doc["data"]["result"]

    def test_rules_evaluate_and_the_dashboard_shows_a_handoff(self):
        # Prometheus first: it applies new targets only every 5 s, so it scrapes nothing for
        # that long, during which the agents start (they fail to be scraped until they listen).
        ports = {"myapp-a": free_port(), "myapp-b": free_port()}
        base = self.prometheus([(pod, "127.0.0.1:%d" % port) for pod, port in ports.items()])
        redis = self.start_redis()
        agents = {pod: self.start_agent(pod, redis, locks=[lock_config("scheduler", ttl="1s")],
                                        http_listen="127.0.0.1:%d" % port)
                  for pod, port in ports.items()}
        app_a, _ = self.leader_app(agents["myapp-a"], "scheduler")
        app_b = self.connect(agents["myapp-b"], client_name="app-b", label="app@myapp-b")
        app_b.call_ok("CAMPAIGN scheduler")
        wait_until(lambda: self.query(base, 'count_over_time(leasekeeper_lock_held{pod="myapp-b"}[1m]) >= 2'),
                   what="two scrapes of both agents")
        app_a.close()  # the last campaign client left: a release, then myapp-b leads
        lead_b, _ = app_b.await_event("LEADER", "scheduler")

        with open(DASHBOARD) as f:
            dash = json.load(f)
        panels = {p["title"]: p for p in dash["panels"] if p["type"] != "row"}
        fill = lambda e: re.sub(r"\$\{?([a-zA-Z_]\w*)\}?", ".*", e.replace("$__rate_interval", "1m"))

        def one(title, ref="A"):
            t = next(t for t in panels[title]["targets"] if t["refId"] == ref)
            return self.query(base, fill(t["expr"]))

        def value(series):
            return float(series["value"][1])

        expect = {
            "Leaders per lock": lambda r: [(x["metric"], value(x)) for x in r] == [({"lock": "scheduler"}, 1.0)],
            "Who leads": lambda r: [x["metric"].get("pod") for x in r] == ["myapp-b"],
            "Fencing token of the leader": lambda r: [int(value(x)) for x in r] == [lead_b.token],
            "New tenures": lambda r: len(r) == 1 and value(r[0]) > 0,
            "Tenures lost, by reason": lambda r: r == [],
            "Releases, by outcome": lambda r: [x["metric"].get("outcome") for x in r] == ["released"],
            "Socket clients, by kind": lambda r: {x["metric"]["kind"]: value(x) for x in r}.get("campaign") == 1.0,
            "Agent versions": lambda r: len(r) == 1 and value(r[0]) == 2.0,
            "Handoffs, by kind": lambda r: ({x["metric"]["after"]: value(x) for x in r}.get("release", 0) > 0
                                            and {x["metric"]["after"]: value(x) for x in r}.get("expiry") == 0),
            "Handoff gap per lock": lambda r: ([x["metric"] for x in r] == [{"lock": "scheduler"}]
                                               and 0 <= value(r[0]) < 1),
            "Backend up, per replica": lambda r: sorted((x["metric"]["pod"], value(x)) for x in r)
                                                 == [("myapp-a", 1.0), ("myapp-b", 1.0)],
        }

        def problems():
            out = []
            for title, p in panels.items():
                for t in p["targets"]:
                    r = self.query(base, fill(t["expr"]))
                    ok = expect[title](r) if title in expect and t["refId"] == "A" else bool(r)
                    if not ok:
                        out.append("panel %r target %s shows %s" % (title, t["refId"], r))
            for v in dash["templating"]["list"]:
                if v["type"] == "query":
                    m = re.match(r"^label_values\((.*),\s*(\w+)\)$", v["query"]["query"])
                    r = self.query(base, "group by (%s) (%s)" % (m.group(2), fill(m.group(1))))
                    want = {"namespace": "prod", "job": "myapp", "lock": "scheduler"}[v["name"]]
                    if [x["metric"].get(m.group(2)) for x in r] != [want]:
                        out.append("variable %s offers %s" % (v["name"], r))
            status, body = http_get(base + "/api/v1/rules")
            for g in json.loads(body)["data"]["groups"]:
                for rule in g["rules"]:
                    if rule["health"] != "ok" or rule["lastEvaluation"].startswith("0001"):
                        out.append("rule %s: health %s %s" % (rule["name"], rule["health"],
                                                              rule.get("lastError", "")))
                    for a in rule.get("alerts", []):
                        if a["state"] == "firing" or rule["name"] != "LeasekeeperTwoLeaders":
                            out.append("alert %s is %s: %s" % (rule["name"], a["state"], a["labels"]))
            return out

        last = []
        try:
            wait_until(lambda: not last.__setitem__(slice(None), problems()) and not last,
                       timeout=20, interval=0.25, what="the dashboard to show the handoff")
        except AssertionError as e:
            raise AssertionError("%s:\n%s" % (e, "\n".join(last)))
        self.assertEqual(problems(), [])


class ExampleRedis(LKTestCase):
    """deploy/examples/redis, run for real: the Redis container's own start script under a real
    redis-server, and an agent with the rendered config, both on loopback."""

    def setUp(self):
        super().setUp()
        if not shutil.which("node"):
            self.skipTest("node is not installed (Debian: apt-get install nodejs npm)")
        node_modules_ready()

    def test_redis_requires_the_generated_password_and_the_agent_is_ready_on_it(self):
        copy = os.path.join(self.tmp, "repo")
        values = copy_deploy(copy)
        dump = os.path.join(self.tmp, "rendered.json")
        rc, out, _ = run_validate(copy, {"LK_DEPLOY_KUBECTL": "0"}, dump=dump)
        self.assertEqual(rc, 0, out)
        with open(dump) as f:
            objs = json.load(f)["deploy/examples/redis"]
        by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
        secret = next(o for o in objs if o["kind"] == "Secret")
        files = {}
        for key in ("auth-key", "redis-password"):
            files[key] = os.path.join(self.tmp, key)
            with open(files[key], "w") as f:
                f.write(secret_value(secret, key))
            os.chmod(files[key], 0o600)

        # The Redis container's script, with its paths and port moved into the test's.
        redis_c = by[("Deployment", "redis")]["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(redis_c["command"][:2], ["sh", "-c"])
        script = redis_c["command"][2]
        port = free_port()
        data = os.path.join(self.tmp, "data")
        os.mkdir(data)
        for old, new in (("/var/run/secrets/redis/password", files["redis-password"]),
                         ("port 6379\n", "port %d\nbind 127.0.0.1\n" % port),
                         ("dir /data\n", "dir %s\n" % data),
                         ("exec redis-server ", "exec %s " % redis_server_bin())):
            self.assertIn(old, script)
            script = script.replace(old, new)
        proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (proc.terminate(), proc.wait(10)))

        def connected():
            try:
                return RespClient(port, timeout=2)
            except OSError:
                return None
        c = wait_until(connected, what="the example Redis to listen")
        with self.assertRaisesRegex(RespError, "NOAUTH"):
            c.call("PING")
        with self.assertRaisesRegex(RespError, "WRONGPASS|invalid password"):
            c.call("AUTH", "CHANGE-ME")
        self.assertEqual(c.call("AUTH", values["redis-password"]), "OK")
        self.assertEqual(c.call("PING"), "PONG")
        self.assertEqual(c.call("CONFIG", "GET", "save"), ["save", ""])
        c.close()

        # The agent, with the rendered ConfigMap's config: the Service name becomes loopback.
        cfg = by[("ConfigMap", "myapp-leasekeeper")]["data"]["config.yaml"]
        http = free_port()
        for old, new in (('address: "redis:6379"', 'address: "127.0.0.1:%d"' % port),
                         ("/var/run/secrets/redis/password", files["redis-password"]),
                         ("/var/run/secrets/leasekeeper/key", files["auth-key"]),
                         ("/run/leasekeeper/agent.sock", os.path.join(self.tmp, "agent.sock")),
                         ('"0.0.0.0:9440"', '"127.0.0.1:%d"' % http)):
            self.assertIn(old, cfg)
            cfg = cfg.replace(old, new)
        path = os.path.join(self.tmp, "config.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        log = open(os.path.join(self.tmp, "agent.log"), "w")
        self.addCleanup(log.close)
        agent = subprocess.Popen([lk_bin(), "agent", "-c", path], stdout=log, stderr=log,
                                 stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, POD_NAME="myapp-0123456789-abcde"))
        self.addCleanup(lambda: (agent.poll() is None and agent.terminate(), agent.wait(30)))
        try:
            wait_until(lambda: http_get("http://127.0.0.1:%d/readyz" % http)[0] == 200,
                       what="the agent to be ready on the example Redis")
        except AssertionError:
            with open(os.path.join(self.tmp, "agent.log")) as f:
                raise AssertionError("agent not ready:\n" + f.read()[-3000:])
        self.assertIsNone(agent.poll())


def dockerfile_stages(text):
    """[(FROM line, [instructions])], continuation lines joined, comments dropped."""
    stages, cur = [], None
    logical = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines()
                                             if not l.lstrip().startswith("#")))
    for line in logical.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.upper().startswith("FROM "):
            cur = (line, [])
            stages.append(cur)
        elif cur is not None:
            cur[1].append(line)
    return stages


def apt_installed(instructions):
    pkgs = set()
    for ins in instructions:
        for m in re.finditer(r"apt-get install ([^&;|]*)", ins):
            pkgs.update(w for w in m.group(1).split() if not w.startswith("-"))
    return pkgs


def package_of(path):
    """The Debian package that owns path (trying the /usr-merged spellings), or None."""
    real = os.path.realpath(path)
    for p in dict.fromkeys([path, real, real.replace("/usr/lib/", "/lib/", 1)]):
        r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0].strip()
    return None


class Dockerfile(unittest.TestCase):
    """What can be checked of the image without a Docker engine."""

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(REPO_ROOT, "Dockerfile")) as f:
            cls.text = f.read()
        cls.stages = dockerfile_stages(cls.text)
        with open(os.path.join(REPO_ROOT, "Makefile")) as f:
            cls.makefile = f.read()

    def test_layout(self):
        self.assertEqual(len(self.stages), 2, [s[0] for s in self.stages])
        build, runtime = self.stages
        self.assertRegex(build[0], r"AS build$")
        self.assertIn("ARG DEBIAN_BUILD_IMAGE=debian:bookworm\n", self.text)
        self.assertIn("ARG DEBIAN_RUNTIME_IMAGE=debian:bookworm-slim\n", self.text)
        self.assertTrue(any("make" in i and " all" in i for i in build[1] if i.startswith("RUN")))
        rt = runtime[1]
        self.assertIn('ENTRYPOINT ["leasekeeper"]', rt)
        self.assertIn('CMD ["agent", "-c", "/etc/leasekeeper/config.yaml"]', rt)
        self.assertIn("USER 65532:65532", rt)  # numeric: runAsNonRoot can verify it
        copies = " ".join(i for i in rt if i.startswith("COPY --from=build"))
        for b in ("leasekeeper", "leasekeeper-static"):
            self.assertRegex(copies, r"/out/%s\b" % re.escape(b))
        self.assertTrue(copies.rstrip().endswith("/usr/local/bin/"), copies)
        # `make all` must build the static client the image ships.
        all_line = re.search(r"^all:(.*)$", self.makefile, re.M).group(1)
        self.assertIn("leasekeeper-static", all_line)

    def test_runtime_libraries(self):
        """The runtime stage installs the package of every library the agent links."""
        if not (shutil.which("readelf") and shutil.which("dpkg-query")):
            self.skipTest("needs readelf and dpkg-query (a Debian build machine)")
        binary = lk_bin()
        r = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
        self.assertTrue(needed, r.stdout)
        installed = apt_installed(self.stages[1][1])
        ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
        for lib in needed:
            if re.match(r"lib(a|ub|l|t)san\.|libc\.so|libm\.so|libgcc_s\.so|libstdc\+\+", lib):
                continue  # the sanitizer runtimes (test builds) and what every image has
            m = re.search(r"^\s*%s \(libc6,x86-64[^)]*\) => (\S+)$" % re.escape(lib), ldconfig, re.M) \
                or re.search(r"^\s*%s \([^)]*\) => (\S+)$" % re.escape(lib), ldconfig, re.M)
            self.assertIsNotNone(m, "%s not found by ldconfig" % lib)
            pkg = package_of(m.group(1))
            self.assertIsNotNone(pkg, "no package owns %s" % m.group(1))
            pkg = pkg.split(":")[0]
            self.assertIn(pkg, installed, "the agent links %s (package %s) but the runtime stage "
                          "does not install it" % (lib, pkg))

    def test_build_dependencies(self):
        """The build stage installs the -dev package of every pkg-config module the Makefile uses."""
        if not (shutil.which("pkg-config") and shutil.which("dpkg-query")):
            self.skipTest("needs pkg-config and dpkg-query (a Debian build machine)")
        mods = re.search(r"^PKGS\s*:?=\s*(.*)$", self.makefile, re.M).group(1).split()
        installed = apt_installed(self.stages[0][1])
        for mod in mods:
            r = subprocess.run(["pkg-config", "--path", mod], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, "pkg-config does not know %s" % mod)
            pkg = package_of(r.stdout.strip())
            self.assertIsNotNone(pkg, r.stdout)
            self.assertIn(pkg.split(":")[0], installed,
                          "the Makefile uses %s (package %s); the build stage does not install it"
                          % (mod, pkg))
        for pkg in ("build-essential", "pkg-config"):
            self.assertIn(pkg, installed)

    def test_dockerignore_keeps_the_sources(self):
        with open(os.path.join(REPO_ROOT, ".dockerignore")) as f:
            patterns = [l.strip().lstrip("/") for l in f
                        if l.strip() and not l.startswith("#") and not l.startswith("!")]
        r = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True)
        files = [f for f in r.stdout.split() if re.match(r"(agent|locks|proto|examples)/|Makefile$", f)]
        self.assertIn("Makefile", files)

        def ignored(path):
            parts = path.split("/")
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            for p in patterns:
                p = p.rstrip("/")
                if p.startswith("**/"):
                    if any(fnmatch.fnmatch(part, p[3:]) for part in parts):
                        return True
                elif any(fnmatch.fnmatch(pre, p) for pre in prefixes):
                    return True
            return False

        self.assertEqual([f for f in files if ignored(f)], [])
        for must in ("build", ".git", "leasekeeper"):
            self.assertTrue(ignored(must), "%s should be kept out of the build context" % must)


if __name__ == "__main__":
    unittest.main()

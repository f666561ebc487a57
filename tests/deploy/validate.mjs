// Offline validation of deploy/: every kustomization is rendered, every object is checked
// against the Kubernetes schemas (kubernetes-models) and for unknown fields, and the
// leasekeeper-specific invariants are asserted. Run by tests/integration/test_deploy.py:
//
//   node tests/deploy/validate.mjs --repo . --lk-bin build/leasekeeper
//
// Rendering: this script renders each kustomization itself (resources and RFC 6902 patches,
// the only features deploy/ uses; anything else is refused). When `kubectl` is on PATH it also
// runs `kubectl kustomize` and requires the same objects (LK_DEPLOY_KUBECTL=0 skips that).
// Each problem is printed as a line "FAIL <where>: <what>"; the last line is
// "RESULT <json summary>". Exit status 0 when nothing failed, 1 otherwise.

import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { isDeepStrictEqual } from "node:util";
import YAML from "yaml";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NODE_MODULES = path.join(HERE, "node_modules");

// Which sidecar layout each kustomization must have. A kustomization found under deploy/ that
// is not listed here is an error: say what it is meant to be.
const EXPECTED = {
  "deploy/base": "native",
  "deploy/classic-sidecar": "classic",
};
const SHARED_DIR = "/run/leasekeeper";
const HTTP_PORT = 9440;
const GRACE_MARGIN_MS = 2000;  // terminationGracePeriodSeconds >= shutdown_timeout + this
const DRAIN_SLACK_MS = 1000;   // shutdown_timeout >= stepdown_timeout + release_timeout + this

// ---- arguments, reporting -----------------------------------------------------------------

function parseArgs(argv) {
  const a = { repo: path.resolve(HERE, "../.."), lkBin: process.env.LK_BIN || "" };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--repo") a.repo = path.resolve(argv[++i]);
    else if (argv[i] === "--lk-bin") a.lkBin = argv[++i];
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (!a.lkBin) a.lkBin = path.join(a.repo, "build/leasekeeper");
  else if (!path.isAbsolute(a.lkBin)) a.lkBin = path.join(a.repo, a.lkBin);
  return a;
}

const failures = [];
const summary = { kustomizations: {}, objects_validated: 0, check_config: [], kubectl: null };

function fail(where, what) {
  failures.push(`${where}: ${what}`);
  console.log(`FAIL ${where}: ${what}`);
}

function note(msg) {
  console.log(`.... ${msg}`);
}

// ---- YAML ---------------------------------------------------------------------------------

// Manifests are read as YAML 1.1, like kubectl does, and must mean the same under YAML 1.2:
// that rules out the ambiguous scalars (0440, yes/no/on/off, 1:30) that parsers disagree on.
function parseYamlDocs(text, where) {
  const out = [];
  const docs11 = YAML.parseAllDocuments(text, { version: "1.1", uniqueKeys: true });
  const docs12 = YAML.parseAllDocuments(text, { version: "1.2", uniqueKeys: true });
  for (let i = 0; i < docs11.length; i++) {
    const d = docs11[i];
    for (const e of [...d.errors, ...d.warnings]) fail(where, `YAML: ${e.message.split("\n")[0]}`);
    const v = d.toJS({ maxAliasCount: 100 });
    if (v === null || v === undefined) continue; // an empty document (comments only)
    if (!isDeepStrictEqual(v, docs12[i].toJS({ maxAliasCount: 100 })))
      fail(where, `document ${i + 1} reads differently as YAML 1.1 and 1.2 (quote the ambiguous scalars)`);
    out.push(v);
  }
  return out;
}

function readYamlFile(file, repo) {
  return parseYamlDocs(fs.readFileSync(file, "utf8"), path.relative(repo, file));
}

// ---- rendering: a small subset of kustomize -----------------------------------------------

const KUSTOMIZATION_FIELDS = new Set(["apiVersion", "kind", "resources", "patches"]);
const PATCH_FIELDS = new Set(["path", "target"]);
const TARGET_FIELDS = new Set(["group", "version", "kind", "name"]);

const KUSTOMIZATION_NAMES = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

function render(dir, repo, seen = new Set()) {
  const kfile = KUSTOMIZATION_NAMES.map((n) => path.join(dir, n)).find((f) => fs.existsSync(f));
  if (!kfile) throw new Error(`${path.relative(repo, dir)}: no kustomization.yaml`);
  const where = path.relative(repo, kfile);
  if (seen.has(dir)) throw new Error(`${where}: resource cycle`);
  seen.add(dir);
  const [k] = readYamlFile(kfile, repo);
  if (!k || k.kind !== "Kustomization") throw new Error(`${where}: not a Kustomization`);
  for (const f of Object.keys(k))
    if (!KUSTOMIZATION_FIELDS.has(f))
      throw new Error(`${where}: "${f}" is not supported by validate.mjs's renderer ` +
                      `(it knows ${[...KUSTOMIZATION_FIELDS].join(", ")}): teach it, or keep deploy/ simpler`);
  let objs = [];
  for (const r of k.resources || []) {
    const p = path.join(dir, r);
    if (fs.statSync(p).isDirectory()) objs.push(...render(p, repo, new Set(seen)));
    else objs.push(...readYamlFile(p, repo));
  }
  for (const [i, pt] of (k.patches || []).entries()) {
    for (const f of Object.keys(pt))
      if (!PATCH_FIELDS.has(f)) throw new Error(`${where}: patches[${i}].${f} is not supported by validate.mjs`);
    for (const f of Object.keys(pt.target || {}))
      if (!TARGET_FIELDS.has(f)) throw new Error(`${where}: patches[${i}].target.${f} is not supported by validate.mjs`);
    if (!pt.path || !pt.target) throw new Error(`${where}: patches[${i}] needs path and target`);
    const [ops] = readYamlFile(path.join(dir, pt.path), repo);
    if (!Array.isArray(ops))
      throw new Error(`${where}: patches[${i}] (${pt.path}): only JSON patches (RFC 6902) are supported by validate.mjs`);
    const targets = objs.filter((o) => matchesTarget(o, pt.target));
    if (targets.length === 0) throw new Error(`${where}: patches[${i}] matches no object`);
    objs = objs.map((o) => (targets.includes(o) ? applyJsonPatch(o, ops, `${where}: patches[${i}]`) : o));
  }
  return objs;
}

function matchesTarget(o, t) {
  const [g, v] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
  return (t.group === undefined || t.group === g) && (t.version === undefined || t.version === v) &&
         (t.kind === undefined || t.kind === o.kind) && (t.name === undefined || t.name === o.metadata?.name);
}

function pointer(p) {
  if (p === "") return [];
  if (!p.startsWith("/")) throw new Error(`bad JSON pointer ${JSON.stringify(p)}`);
  return p.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function applyJsonPatch(obj, ops, where) {
  const doc = structuredClone(obj);
  const parentOf = (p) => {
    const toks = pointer(p);
    let cur = doc;
    for (const t of toks.slice(0, -1)) {
      cur = Array.isArray(cur) ? cur[Number(t)] : cur?.[t];
      if (cur === undefined || cur === null || typeof cur !== "object") throw new Error(`${where}: no ${p}`);
    }
    return [cur, toks[toks.length - 1]];
  };
  const get = (p) => {
    let cur = doc;
    for (const t of pointer(p)) {
      if (cur === null || typeof cur !== "object" || !(Array.isArray(cur) ? Number(t) < cur.length : t in cur))
        throw new Error(`${where}: no ${p}`);
      cur = Array.isArray(cur) ? cur[Number(t)] : cur[t];
    }
    return cur;
  };
  const remove = (p) => {
    const [par, last] = parentOf(p);
    const v = get(p);
    if (Array.isArray(par)) par.splice(Number(last), 1); else delete par[last];
    return v;
  };
  const add = (p, v) => {
    const [par, last] = parentOf(p);
    if (Array.isArray(par)) {
      const idx = last === "-" ? par.length : Number(last);
      if (!(idx >= 0 && idx <= par.length)) throw new Error(`${where}: index out of range in ${p}`);
      par.splice(idx, 0, v);
    } else par[last] = v;
  };
  for (const op of ops) {
    switch (op.op) {
      case "test":
        if (!isDeepStrictEqual(get(op.path), op.value))
          throw new Error(`${where}: test failed at ${op.path}: ${JSON.stringify(get(op.path))} != ${JSON.stringify(op.value)}`);
        break;
      case "add": add(op.path, structuredClone(op.value)); break;
      case "remove": remove(op.path); break;
      case "replace": get(op.path); { const [par, last] = parentOf(op.path); par[Array.isArray(par) ? Number(last) : last] = structuredClone(op.value); } break;
      case "move": add(op.path, remove(op.from)); break;
      case "copy": add(op.path, structuredClone(get(op.from))); break;
      default: throw new Error(`${where}: unknown JSON patch op ${JSON.stringify(op.op)}`);
    }
  }
  return doc;
}

const objKey = (o) => `${o.apiVersion}/${o.kind}/${o.metadata?.namespace || ""}/${o.metadata?.name}`;

function kubectlRender(dir) {
  if (process.env.LK_DEPLOY_KUBECTL === "0") return { skipped: "LK_DEPLOY_KUBECTL=0" };
  const which = spawnSync("sh", ["-c", "command -v kubectl"], { encoding: "utf8" });
  if (which.status !== 0) return { skipped: "kubectl not on PATH" };
  const r = spawnSync("kubectl", ["kustomize", dir], { encoding: "utf8", timeout: 60000 });
  if (r.status !== 0) return { error: `kubectl kustomize failed: ${(r.stderr || r.error || "").toString().trim()}` };
  return { objs: parseYamlDocs(r.stdout, `kubectl kustomize ${dir}`) };
}

// ---- schema validation ----------------------------------------------------------------------

async function modelFor(o) {
  const [g, v] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : [null, o.apiVersion];
  const rel = g ? `kubernetes-models/${g}/${v}/${o.kind}` : `kubernetes-models/${v}/${o.kind}`;
  const file = path.join(NODE_MODULES, rel + ".mjs");
  if (!/^[A-Za-z0-9.]+$/.test(`${g || ""}${v}${o.kind}`) || !fs.existsSync(file)) return null;
  const mod = await import(pathToFileURL(file).href);
  return { Cls: mod[o.kind], dts: path.join(NODE_MODULES, rel + ".d.ts"), iface: `I${o.kind}` };
}

// kubernetes-models' JSON schemas let unknown fields through (a misspelt "readinesProbe" would
// pass), so the field names are also checked, against the interfaces in its .d.ts files.
const dtsCache = new Map();

function parseDts(file) {
  if (dtsCache.has(file)) return dtsCache.get(file);
  const text = fs.readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
  const imports = new Map();
  for (const m of text.matchAll(/import \{ (\w+) \} from "([^"]+)";/g)) {
    const spec = m[2];
    const target = spec.startsWith(".") ? path.resolve(path.dirname(file), spec) : path.join(NODE_MODULES, spec);
    imports.set(m[1], { file: target + ".d.ts", iface: "I" + path.basename(spec) });
  }
  const interfaces = new Map();
  for (const m of text.matchAll(/export interface (\w+)(?: extends [^{]+)? \{\n/g)) {
    const props = new Map();
    let depth = 1;
    for (const line of text.slice(m.index + m[0].length).split("\n")) {
      if (depth === 1) {
        const pm = line.match(/^\s*"([^"]+)"\??: (.*?);?$/);
        if (pm) props.set(pm[1], pm[2]);
      }
      depth += (line.match(/\{/g) || []).length - (line.match(/\}/g) || []).length;
      if (depth <= 0) break;
    }
    interfaces.set(m[1], props);
  }
  const r = { imports, interfaces };
  dtsCache.set(file, r);
  return r;
}

function checkFields(value, dtsFile, iface, at, where) {
  if (value === null || typeof value !== "object" || Array.isArray(value) || !fs.existsSync(dtsFile)) return;
  const d = parseDts(dtsFile);
  const props = d.interfaces.get(iface);
  if (!props) return; // a type alias (IntOrString, Quantity, Time...): nothing to check
  for (const [k, v] of Object.entries(value)) {
    if (!props.has(k)) {
      fail(where, `${at}${at ? "." : ""}${k}: unknown field (not in ${iface.slice(1)})`);
      continue;
    }
    const type = props.get(k);
    const arr = type.match(/^Array<(\w+)>$/);
    const ref = d.imports.get(arr ? arr[1] : type);
    if (!ref) continue;
    if (arr && Array.isArray(v)) v.forEach((e, i) => checkFields(e, ref.file, ref.iface, `${at}${at ? "." : ""}${k}[${i}]`, where));
    else if (!arr) checkFields(v, ref.file, ref.iface, `${at}${at ? "." : ""}${k}`, where);
  }
}

async function validateObject(o, where) {
  if (!o || typeof o !== "object" || !o.apiVersion || !o.kind) {
    fail(where, "an object without apiVersion/kind");
    return;
  }
  const w = `${where}: ${o.kind}/${o.metadata?.name}`;
  const m = await modelFor(o);
  if (!m || !m.Cls) {
    fail(w, `no kubernetes-models class for ${o.apiVersion} ${o.kind}`);
    return;
  }
  try {
    new m.Cls(o).validate();
  } catch (e) {
    fail(w, `schema: ${e.message}`);
  }
  checkFields(o, m.dts, m.iface, "", w);
  summary.objects_validated++;
}

// ---- durations, file lookups ----------------------------------------------------------------

function durationMs(s, what) {
  if (typeof s === "number") throw new Error(`${what}: ${s} has no unit`);
  const units = { ms: 1, s: 1000, m: 60000, h: 3600000 };
  let rest = String(s), ms = 0;
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(rest)) throw new Error(`${what}: cannot read duration ${JSON.stringify(s)}`);
  for (const m of rest.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) ms += Number(m[1]) * units[m[2]];
  return ms;
}

// Which volume, and which key of which ConfigMap/Secret, a container sees at `file`.
function resolveFile(container, podSpec, objs, file) {
  const mounts = (container.volumeMounts || [])
    .filter((m) => file === m.mountPath || file.startsWith(m.mountPath.replace(/\/$/, "") + "/"))
    .sort((a, b) => b.mountPath.length - a.mountPath.length);
  if (!mounts.length) return { error: `${file} is on no volume mounted in container ${container.name}` };
  const m = mounts[0];
  const vol = (podSpec.volumes || []).find((v) => v.name === m.name);
  if (!vol) return { error: `container ${container.name} mounts volume ${m.name}, which the pod does not define` };
  const rel = path.posix.relative(m.mountPath, file);
  const src = vol.configMap ? ["ConfigMap", vol.configMap.name, vol.configMap.items]
            : vol.secret ? ["Secret", vol.secret.secretName, vol.secret.items] : null;
  if (!src) return { volume: vol, mount: m, rel };
  const [kind, name, items] = src;
  const key = items ? items.find((it) => it.path === rel)?.key : rel;
  if (!key) return { error: `${file}: volume ${vol.name} has no item with path ${rel}` };
  const obj = objs.find((o) => o.kind === kind && o.metadata?.name === name);
  if (!obj) return { error: `${file}: ${kind} ${name} is not among the rendered objects` };
  const data = { ...(obj.data || {}), ...(obj.stringData || {}) };
  if (!(key in data)) return { error: `${file}: ${kind} ${name} has no key ${key}` };
  const value = obj.stringData && key in obj.stringData ? obj.stringData[key]
              : kind === "Secret" ? Buffer.from(obj.data[key], "base64").toString() : obj.data[key];
  return { volume: vol, mount: m, rel, kind, name, key, value };
}

// ---- the invariants --------------------------------------------------------------------------

function checkDeployment(dep, objs, mode, where, lkBin) {
  const w = `${where}: Deployment/${dep.metadata.name}`;
  const check = (cond, what) => { if (!cond) fail(w, what); return !!cond; };
  const spec = dep.spec.template.spec;
  const inits = spec.initContainers || [];
  const mains = spec.containers || [];
  const isAgent = (c) => (c.args || c.command || []).includes("agent");

  check(dep.spec.replicas === 3, `replicas is ${dep.spec.replicas}, want 3`);

  // A few of the API server's own rules, which the OpenAPI schemas do not express.
  const labels = dep.spec.template.metadata?.labels || {};
  check(Object.entries(dep.spec.selector?.matchLabels || {}).every(([k, v]) => labels[k] === v),
        "spec.selector does not match the pod template's labels");
  const all = [...inits, ...mains];
  const dup = (xs) => xs.filter((x, i) => xs.indexOf(x) !== i);
  check(!dup(all.map((c) => c.name)).length, `container names repeat: ${dup(all.map((c) => c.name))}`);
  check(!dup((spec.volumes || []).map((v) => v.name)).length, "volume names repeat");
  for (const c of all) {
    for (const m of c.volumeMounts || [])
      check((spec.volumes || []).some((v) => v.name === m.name), `container ${c.name} mounts undefined volume ${m.name}`);
    for (const p of c.ports || [])
      check(!p.name || /^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/.test(p.name), `container ${c.name}: bad port name ${p.name}`);
    const sidecar = inits.includes(c) && c.restartPolicy === "Always";
    if (inits.includes(c) && !sidecar)
      check(!c.startupProbe && !c.readinessProbe && !c.livenessProbe && !c.lifecycle,
            `init container ${c.name}: probes and lifecycle hooks need restartPolicy: Always`);
    check(c.restartPolicy === undefined || (inits.includes(c) && c.restartPolicy === "Always"),
          `container ${c.name}: restartPolicy is only for init containers, and only Always`);
  }

  // The agent: native (init container, restartPolicy Always) or classic (first container).
  const agents = [...inits, ...mains].filter(isAgent);
  if (!check(agents.length === 1, `want exactly one agent container (args containing "agent"), found ${agents.length}`)) return;
  const agent = agents[0];
  const apps = mains.filter((c) => c !== agent);
  check(apps.length >= 1, "no app container");
  if (mode === "native") {
    check(inits.includes(agent), "native sidecar: the agent must be in initContainers");
    check(agent.restartPolicy === "Always", "native sidecar: the agent needs restartPolicy: Always");
    check(agent.startupProbe?.httpGet?.path === "/healthz" && agent.startupProbe?.httpGet?.port === HTTP_PORT,
          "native sidecar: a startupProbe on /healthz:9440 holds the app until the socket listens");
  } else {
    check(mains[0] === agent, "classic sidecar: the agent must be the first of containers");
    check(agent.restartPolicy === undefined, "classic sidecar: a regular container takes no restartPolicy");
    check(inits.every((c) => c.restartPolicy === undefined), "classic sidecar: no init container may have a restartPolicy");
    check(agent.lifecycle?.postStart?.exec?.command?.join(" ").includes("agent.sock"),
          "classic sidecar: a postStart hook must wait for the socket before the app starts");
  }

  // The config, as the agent sees it (-c FILE).
  const args = agent.args || [];
  const cfgPath = args[args.indexOf("-c") + 1];
  if (!check(args.indexOf("-c") >= 0 && cfgPath, "agent args need -c CONFIG")) return;
  const cfgRef = resolveFile(agent, spec, objs, cfgPath);
  if (!check(!cfgRef.error, cfgRef.error) || !check(cfgRef.kind === "ConfigMap", `${cfgPath} must come from a ConfigMap`)) return;
  const cfgText = cfgRef.value;
  let cfg;
  try {
    cfg = YAML.parse(cfgText, { version: "1.1", uniqueKeys: true });
  } catch (e) {
    fail(w, `config ${cfgPath}: ${e.message}`);
    return;
  }

  // The shared emptyDir: socket and client binary.
  const shared = (c) => (c.volumeMounts || []).find((m) => m.mountPath === SHARED_DIR);
  const sharedVol = shared(agent) && spec.volumes.find((v) => v.name === shared(agent).name);
  check(sharedVol?.emptyDir, `the agent must mount an emptyDir at ${SHARED_DIR}`);
  for (const c of apps)
    check(shared(c)?.name === sharedVol?.name, `app container ${c.name} must mount the agent's emptyDir at ${SHARED_DIR}`);
  check(cfg.socket === `${SHARED_DIR}/agent.sock`, `config socket is ${cfg.socket}, want ${SHARED_DIR}/agent.sock`);

  // The client binary: copied by an init container (same image as the agent) into the emptyDir.
  const copier = inits.find((c) => (c.command || []).some((a) => a.endsWith("/leasekeeper-static")));
  let clientPath = null;
  if (check(copier, "no init container copies /usr/local/bin/leasekeeper-static")) {
    clientPath = copier.command[copier.command.length - 1];
    check(inits.indexOf(copier) < inits.indexOf(agent) || mode === "classic", "the copy must come before the agent");
    check(copier.image === agent.image, `the client copier's image (${copier.image}) differs from the agent's (${agent.image})`);
    check(clientPath === `${SHARED_DIR}/bin/leasekeeper`, `client copied to ${clientPath}, want ${SHARED_DIR}/bin/leasekeeper`);
    check(shared(copier)?.name === sharedVol?.name, `the copier must mount the emptyDir at ${SHARED_DIR}`);
  }

  // Timing: grace >= shutdown_timeout + margin; locks fit in shutdown_timeout; preStop drain.
  const shutdownMs = cfg.shutdown_timeout === undefined ? 25000 : durationMs(cfg.shutdown_timeout, "shutdown_timeout");
  const graceMs = (spec.terminationGracePeriodSeconds ?? 30) * 1000;
  check(graceMs >= shutdownMs + GRACE_MARGIN_MS,
        `terminationGracePeriodSeconds (${graceMs / 1000}s) < shutdown_timeout (${shutdownMs / 1000}s) + ${GRACE_MARGIN_MS / 1000}s`);
  for (const l of cfg.locks || []) {
    const ttl = l.ttl ? durationMs(l.ttl, "ttl") : 10000;
    const sd = l.stepdown_timeout ? durationMs(l.stepdown_timeout, "stepdown_timeout") : 5000;
    const rel = l.release_timeout ? durationMs(l.release_timeout, "release_timeout") : 3000;
    const dl = l.renew_deadline ? durationMs(l.renew_deadline, "renew_deadline") : (2 * ttl) / 3;
    check(sd + rel + DRAIN_SLACK_MS <= shutdownMs,
          `lock ${l.name}: stepdown_timeout + release_timeout + ${DRAIN_SLACK_MS}ms > shutdown_timeout`);
    check(dl < ttl, `lock ${l.name}: renew_deadline must be shorter than ttl`);
  }
  for (const c of apps) {
    const cmd = c.lifecycle?.preStop?.exec?.command || [];
    if (!check(cmd[0] === clientPath && cmd[1] === "drain", `app ${c.name}: preStop must run ${clientPath} drain, runs ${JSON.stringify(cmd)}`)) continue;
    const ti = cmd.indexOf("--timeout");
    if (check(ti > 0, `app ${c.name}: preStop drain needs --timeout`)) {
      const t = durationMs(cmd[ti + 1], "drain --timeout");
      check(t >= shutdownMs && t < graceMs, `app ${c.name}: drain --timeout ${cmd[ti + 1]} must be >= shutdown_timeout and < the grace period`);
    }
    const env = Object.fromEntries((c.env || []).map((e) => [e.name, e.value]));
    check(env.LEASEKEEPER_SOCKET === cfg.socket, `app ${c.name}: LEASEKEEPER_SOCKET must be ${cfg.socket}`);
    if (cfg.auth_key_file) {
      const mine = resolveFile(c, spec, objs, env.LEASEKEEPER_AUTH_KEY_FILE || "(unset)");
      const theirs = resolveFile(agent, spec, objs, cfg.auth_key_file);
      check(!mine.error, `app ${c.name}: LEASEKEEPER_AUTH_KEY_FILE: ${mine.error}`);
      check(!theirs.error, `agent: auth_key_file: ${theirs.error}`);
      check(mine.kind === "Secret" && mine.name === theirs.name && mine.key === theirs.key,
            `app ${c.name}: LEASEKEEPER_AUTH_KEY_FILE must be the agent's auth_key_file, from the Secret`);
    }
  }

  // Identity from the downward API.
  const podName = (agent.env || []).find((e) => e.name === "POD_NAME");
  check(podName?.valueFrom?.fieldRef?.fieldPath === "metadata.name", "agent env POD_NAME must come from metadata.name");
  check(String(cfg.identity).includes("${POD_NAME}"), "config identity should be ${POD_NAME}");

  // HTTP: probes, port, Prometheus annotations.
  const listen = String(cfg.http_listen || "");
  const port = Number(listen.slice(listen.lastIndexOf(":") + 1));
  check(port === HTTP_PORT && !/^(127\.|localhost|\[::1\])/.test(listen),
        `config http_listen ${JSON.stringify(listen)}: want port ${HTTP_PORT} on all interfaces, where the kubelet's probes reach`);
  const probe = (p, pathWant, name) => check(p?.httpGet?.path === pathWant && p?.httpGet?.port === HTTP_PORT,
                                             `agent ${name} must be httpGet ${pathWant} on ${HTTP_PORT}`);
  probe(agent.readinessProbe, "/readyz", "readinessProbe");
  probe(agent.livenessProbe, "/healthz", "livenessProbe");
  check((agent.ports || []).some((p) => p.containerPort === HTTP_PORT), `agent must declare containerPort ${HTTP_PORT}`);
  const ann = dep.spec.template.metadata?.annotations || {};
  check(ann["prometheus.io/scrape"] === "true" && ann["prometheus.io/port"] === String(HTTP_PORT) &&
        ann["prometheus.io/path"] === "/metrics", "pod template needs prometheus.io/scrape, port 9440, path /metrics");

  // Secrets and config files are mounted, read-only, from objects that have the keys.
  for (const [field, file] of [["auth_key_file", cfg.auth_key_file], ...(cfg.backends || []).map((b, i) => [`backends[${i}].password_file`, b.password_file])]) {
    if (!file) continue;
    const r = resolveFile(agent, spec, objs, file);
    if (check(!r.error, `config ${field}: ${r.error}`)) {
      check(r.kind === "Secret", `config ${field}: ${file} must come from a Secret`);
      check(r.mount.readOnly === true, `config ${field}: the mount of ${file} must be readOnly`);
    }
  }
  const secretsOf = (c) => (c.volumeMounts || []).filter((m) => spec.volumes.find((v) => v.name === m.name)?.secret);
  for (const c of [...inits, ...mains])
    for (const m of secretsOf(c)) check(m.readOnly === true, `container ${c.name}: secret volume ${m.name} must be mounted readOnly`);

  // Hardening, every container.
  const pod = spec.securityContext || {};
  for (const c of [...inits, ...mains]) {
    const sc = c.securityContext || {};
    check((sc.runAsNonRoot ?? pod.runAsNonRoot) === true, `container ${c.name}: runAsNonRoot`);
    check(sc.readOnlyRootFilesystem === true, `container ${c.name}: readOnlyRootFilesystem`);
    check(sc.allowPrivilegeEscalation === false, `container ${c.name}: allowPrivilegeEscalation: false`);
    check((sc.capabilities?.drop || []).includes("ALL"), `container ${c.name}: capabilities.drop: [ALL]`);
    check(!sc.privileged, `container ${c.name}: not privileged`);
    check(c.resources?.requests?.cpu && c.resources?.requests?.memory && c.resources?.limits?.memory,
          `container ${c.name}: needs requests (cpu, memory) and a memory limit`);
  }

  // The config itself passes the agent's own check, with the secrets written to temp files.
  checkConfig(cfgText, objs, agent, spec, w, lkBin);
}

function checkConfig(cfgText, objs, agent, spec, where, lkBin) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "lk-deploy-"));
  try {
    const doc = YAML.parseDocument(cfgText, { version: "1.1" });
    const cfg = doc.toJS();
    const swap = (keyPath, file) => {
      const r = resolveFile(agent, spec, objs, file);
      const dest = path.join(tmp, keyPath.join("_"));
      fs.writeFileSync(dest, r.error ? "" : r.value, { mode: 0o600 });
      doc.setIn(keyPath, dest);
      return r;
    };
    if (cfg.auth_key_file) {
      const r = swap(["auth_key_file"], cfg.auth_key_file);
      if (!r.error && !/^[0-9a-fA-F]{64}$/.test(r.value.trim()))
        fail(where, `the Secret's ${r.key} is not 64 hex characters`);
    }
    (cfg.backends || []).forEach((b, i) => { if (b.password_file) swap(["backends", i, "password_file"], b.password_file); });
    // The socket directory need not exist for check-config, but keep it out of /run anyway.
    doc.setIn(["socket"], path.join(tmp, "agent.sock"));
    const file = path.join(tmp, "config.yaml");
    fs.writeFileSync(file, String(doc));
    if (!fs.existsSync(lkBin)) {
      fail(where, `check-config: no leasekeeper binary at ${lkBin} (build it, or set LK_BIN)`);
      return;
    }
    const r = spawnSync(lkBin, ["check-config", "-c", file], {
      encoding: "utf8", timeout: 30000, env: { ...process.env, POD_NAME: "myapp-0123456789-abcde" } });
    const out = `${r.stdout || ""}${r.stderr || ""}`.trim();
    if (r.status !== 0) fail(where, `check-config failed (exit ${r.status}): ${out}`);
    else if ((r.stderr || "").trim()) fail(where, `check-config warns: ${r.stderr.trim()}`);
    else summary.check_config.push({ where, output: out.replace(file, "config.yaml") });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

// ---- main ------------------------------------------------------------------------------------

function findKustomizations(dir, repo, out = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) findKustomizations(p, repo, out);
    else if (KUSTOMIZATION_NAMES.includes(e.name)) out.push(path.relative(repo, dir));
  }
  return out.sort();
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const found = findKustomizations(path.join(args.repo, "deploy"), args.repo);
  for (const want of Object.keys(EXPECTED))
    if (!found.includes(want)) fail(want, "kustomization.yaml is missing");
  for (const rel of found) {
    const mode = EXPECTED[rel];
    if (!mode) {
      fail(rel, "a kustomization validate.mjs does not know: add it to EXPECTED (native or classic)");
      continue;
    }
    const dir = path.join(args.repo, rel);
    let objs;
    try {
      objs = render(dir, args.repo);
    } catch (e) {
      fail(rel, `render: ${e.message}`);
      continue;
    }
    const info = { mode, objects: objs.map((o) => `${o.kind}/${o.metadata?.name}`), kubectl: null };
    summary.kustomizations[rel] = info;
    note(`${rel}: rendered ${info.objects.join(", ")}`);

    const k = kubectlRender(dir);
    if (k.skipped) info.kubectl = `skipped: ${k.skipped}`;
    else if (k.error) { info.kubectl = "failed"; fail(rel, k.error); }
    else {
      const mine = new Map(objs.map((o) => [objKey(o), o]));
      const theirs = new Map(k.objs.map((o) => [objKey(o), o]));
      const same = mine.size === theirs.size && [...mine].every(([key, o]) => isDeepStrictEqual(o, theirs.get(key)));
      info.kubectl = same ? "same objects" : "differs";
      if (!same) fail(rel, `kubectl kustomize renders different objects than validate.mjs: ` +
                            `${[...theirs.keys()].join(", ")} vs ${[...mine.keys()].join(", ")}` +
                            ` (first difference: ${[...mine].find(([key, o]) => !isDeepStrictEqual(o, theirs.get(key)))?.[0]})`);
      for (const o of k.objs) if (!mine.has(objKey(o))) await validateObject(o, `${rel} (kubectl)`);
    }

    const names = new Set();
    for (const o of objs) {
      await validateObject(o, rel);
      if (names.has(objKey(o))) fail(rel, `${objKey(o)} defined twice`);
      names.add(objKey(o));
    }
    const deps = objs.filter((o) => o.kind === "Deployment");
    if (!deps.length) fail(rel, "no Deployment");
    for (const d of deps) {
      try {
        checkDeployment(d, objs, mode, rel, args.lkBin);
      } catch (e) {
        fail(`${rel}: Deployment/${d.metadata?.name}`, e.stack || e.message);
      }
    }
  }
  summary.failures = failures.length;
  console.log(`RESULT ${JSON.stringify(summary)}`);
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  console.log(`FAIL validate.mjs: ${e.stack || e}`);
  console.log(`RESULT ${JSON.stringify({ ...summary, failures: failures.length + 1 })}`);
  process.exit(1);
});

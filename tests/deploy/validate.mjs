// Offline validation of deploy/: every kustomization is rendered, every object is checked
// against the Kubernetes schemas (kubernetes-models) and for unknown fields, and the
// leasekeeper-specific invariants are asserted. Run by tests/integration/test_deploy.py:
//
//   node tests/deploy/validate.mjs --repo . --lk-bin build/leasekeeper [--dump rendered.json]
//
// Rendering: this script renders each kustomization itself (resources, RFC 6902 patches, and
// secretGenerator / configMapGenerator from files with kustomize's hashed names, the only
// features deploy/ uses; anything else is refused). --dump writes every rendering as JSON.
// When `kubectl` is on PATH it also runs `kubectl kustomize` and requires the same objects
// (LK_DEPLOY_KUBECTL=0 skips that). deploy/ must hold the Secret's files (deploy/README.md): the
// test renders a copy of deploy/ into which it wrote random ones.
// Each problem is printed as a line "FAIL <where>: <what>"; the last line is
// "RESULT <json summary>". Exit status 0 when nothing failed, 1 otherwise.

import { execFileSync, spawnSync } from "node:child_process";
import crypto from "node:crypto";
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
// "monitoring" is a kustomization with no app of its own, checked against what deploy/base
// renders (MONITORED).
const EXPECTED = {
  "deploy/base": "native",
  "deploy/classic-sidecar": "classic",
  "deploy/examples/redis": "native",
  "deploy/monitoring": "monitoring",
};
const MONITORED = "deploy/base";
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
    else if (argv[i] === "--dump") a.dump = path.resolve(argv[++i]);
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

const KUSTOMIZATION_FIELDS = new Set(["apiVersion", "kind", "resources", "patches", "secretGenerator",
                                      "configMapGenerator", "generatorOptions"]);
const PATCH_FIELDS = new Set(["path", "target"]);
const TARGET_FIELDS = new Set(["group", "version", "kind", "name"]);
const GENERATOR_FIELDS = new Set(["name", "type", "files"]);
const GENERATOR_OPTION_FIELDS = new Set(["labels", "disableNameSuffixHash"]);

const KUSTOMIZATION_NAMES = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

// Objects made by a secretGenerator or configMapGenerator (rather than written in a manifest),
// and the file each of their keys was read from.
const GENERATED = new WeakMap();

// kustomize's name suffix for a generated object (api/hasher in kustomize v5): the first 10 hex
// digits of the SHA-256 of a JSON encoding, with 0 1 3 a e swapped for letters so that the
// suffix never looks like a number. The encoding's "name" is always "" in kustomize v5 (it looks
// up "metadata/name" as one key), so the suffix depends on the data and type only.
function nameSuffixHash(o) {
  const m = o.kind === "Secret" ? { data: o.data || {}, kind: "Secret", name: "", type: o.type || "" }
                                : { data: o.data || {}, kind: "ConfigMap", name: "" };
  const sorted = (x) => (x && typeof x === "object" && !Array.isArray(x)
    ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, sorted(x[k])])) : x);
  const hex = crypto.createHash("sha256").update(JSON.stringify(sorted(m))).digest("hex");
  return hex.slice(0, 10).replace(/[013ae]/g, (c) => ({ 0: "g", 1: "h", 3: "k", a: "m", e: "t" })[c]);
}

// kustomize (kyaml's encodeBase64) breaks base64 longer than 70 characters into lines of 70,
// each ending in a newline; the API server's decoder skips the newlines.
function kustomizeBase64(bytes) {
  const b64 = bytes.toString("base64");
  if (Math.floor(b64.length / 70) + 1 === 1) return b64;
  let out = "";
  for (let i = 0; i < b64.length; i += 70) out += b64.slice(i, i + 70) + "\n";
  return out;
}

function generate(k, dir, where) {
  const out = [];
  const opts = k.generatorOptions || {};
  for (const f of Object.keys(opts))
    if (!GENERATOR_OPTION_FIELDS.has(f)) throw new Error(`${where}: generatorOptions.${f} is not supported by validate.mjs`);
  for (const [field, kind] of [["secretGenerator", "Secret"], ["configMapGenerator", "ConfigMap"]]) {
    for (const [i, g] of (k[field] || []).entries()) {
      for (const f of Object.keys(g))
        if (!GENERATOR_FIELDS.has(f) || (f === "type" && kind !== "Secret"))
          throw new Error(`${where}: ${field}[${i}].${f} is not supported by validate.mjs` +
                          (f === "literals" ? " (a literal is a value written in the repository)" : ""));
      if (!g.name || !(g.files || []).length) throw new Error(`${where}: ${field}[${i}] needs a name and files`);
      const data = {}, sources = {};
      for (const spec of g.files) {
        const eq = spec.indexOf("=");
        const key = eq >= 0 ? spec.slice(0, eq) : path.basename(spec);
        const file = path.resolve(dir, eq >= 0 ? spec.slice(eq + 1) : spec);
        if (!file.startsWith(dir + path.sep))
          throw new Error(`${where}: ${field} ${g.name}: ${spec} is outside the kustomization's directory`);
        if (!fs.existsSync(file))
          throw new Error(`${where}: ${field} ${g.name}: ${path.relative(dir, file)} does not exist ` +
                          "(make it first: deploy/README.md, Quick start)");
        const bytes = fs.readFileSync(file);
        data[key] = kind === "Secret" ? kustomizeBase64(bytes) : bytes.toString("utf8");
        sources[key] = file;
      }
      const o = { apiVersion: "v1", kind, metadata: { name: g.name } };
      if (opts.labels) o.metadata.labels = { ...opts.labels };
      o.data = data;
      if (kind === "Secret") o.type = g.type || "Opaque";
      if (!opts.disableNameSuffixHash) o.metadata.name = `${g.name}-${nameSuffixHash(o)}`;
      GENERATED.set(o, { generator: field, name: g.name, sources });
      out.push(o);
    }
  }
  return out;
}

// Where a pod template names a Secret or ConfigMap; kustomize rewrites these to a generated
// object's hashed name. Returns [holder, field, kind] triples.
function nameRefs(o) {
  const spec = o.kind === "Pod" ? o.spec : o.spec?.template?.spec;
  if (!spec) return [];
  const refs = [];
  for (const v of spec.volumes || []) {
    if (v.secret) refs.push([v.secret, "secretName", "Secret"]);
    if (v.configMap) refs.push([v.configMap, "name", "ConfigMap"]);
    for (const src of v.projected?.sources || []) {
      if (src.secret) refs.push([src.secret, "name", "Secret"]);
      if (src.configMap) refs.push([src.configMap, "name", "ConfigMap"]);
    }
  }
  for (const c of [...(spec.initContainers || []), ...(spec.containers || [])]) {
    for (const e of c.env || []) {
      if (e.valueFrom?.secretKeyRef) refs.push([e.valueFrom.secretKeyRef, "name", "Secret"]);
      if (e.valueFrom?.configMapKeyRef) refs.push([e.valueFrom.configMapKeyRef, "name", "ConfigMap"]);
    }
    for (const e of c.envFrom || []) {
      if (e.secretRef) refs.push([e.secretRef, "name", "Secret"]);
      if (e.configMapRef) refs.push([e.configMapRef, "name", "ConfigMap"]);
    }
  }
  for (const s of spec.imagePullSecrets || []) refs.push([s, "name", "Secret"]);
  return refs;
}

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
  objs.push(...generate(k, dir, where));
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
  // References to a generated object by its plain name get the hashed name, in every object of
  // this kustomization, those of its bases included (a base's own were rewritten already).
  const renamed = new Map();
  for (const o of objs) {
    const g = GENERATED.get(o);
    if (g && g.name !== o.metadata.name) renamed.set(`${o.kind}/${g.name}`, o.metadata.name);
  }
  for (const o of objs)
    for (const [holder, field, kind] of nameRefs(o))
      if (renamed.has(`${kind}/${holder[field]}`)) holder[field] = renamed.get(`${kind}/${holder[field]}`);
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

// API groups that are not Kubernetes' own, and the package that has their models.
const CRD_PACKAGES = { "monitoring.coreos.com": "@kubernetes-models/prometheus-operator" };

async function modelFor(o) {
  const [g, v] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : [null, o.apiVersion];
  const rel = !g ? `kubernetes-models/${v}/${o.kind}`
            : CRD_PACKAGES[g] ? `${CRD_PACKAGES[g]}/${g}/${v}/${o.kind}` : `kubernetes-models/${g}/${v}/${o.kind}`;
  const file = path.join(NODE_MODULES, rel + ".mjs");
  if (!/^[A-Za-z0-9.]+$/.test(`${g || ""}${v}${o.kind}`) || !fs.existsSync(file)) return null;
  const mod = await import(pathToFileURL(file).href);
  return { Cls: mod[o.kind], dts: path.join(NODE_MODULES, rel + ".d.ts"), iface: `I${o.kind}` };
}

// kubernetes-models' JSON schemas let unknown fields through (a misspelt "readinesProbe" would
// pass), so the field names are also checked, against the interfaces in its .d.ts files. The
// core types refer to each other by name (one interface per file); the Prometheus Operator's
// CRD types are written inline, objects in objects, so the types are parsed as a small tree:
// { "a"?: T; [key: string]: T; }, Array<T>, a name (an imported interface), or anything else.
const dtsCache = new Map();

function parseTsType(text, pos) {
  const ws = () => { while (pos < text.length && /\s/.test(text[pos])) pos++; };
  ws();
  if (text[pos] === "{") {
    pos++;
    const props = new Map();
    let index = null;
    for (;;) {
      ws();
      if (text[pos] === "}") { pos++; break; }
      if (pos >= text.length) throw new Error("unterminated object type");
      let name = null;
      if (text[pos] === "[") {
        pos = text.indexOf("]", pos) + 1;
      } else if (text[pos] === '"') {
        const e = text.indexOf('"', pos + 1);
        name = text.slice(pos + 1, e);
        pos = e + 1;
      } else {
        const m = /^(readonly\s+)?(\w+)/.exec(text.slice(pos));
        if (!m) throw new Error(`cannot read a property at ${JSON.stringify(text.slice(pos, pos + 40))}`);
        name = m[2];
        pos += m[0].length;
      }
      ws();
      if (text[pos] === "?") pos++;
      ws();
      if (text[pos] !== ":") throw new Error(`expected ":" at ${JSON.stringify(text.slice(pos, pos + 40))}`);
      const [t, next] = parseTsType(text, pos + 1);
      pos = next;
      ws();
      if (text[pos] === ";" || text[pos] === ",") pos++;
      if (name === null) index = t; else props.set(name, t);
    }
    return [{ k: "obj", props, index }, pos];
  }
  if (text.startsWith("Array<", pos)) {
    const [of, next] = parseTsType(text, pos + 6);
    pos = next;
    ws();
    if (text[pos] !== ">") throw new Error("unterminated Array<");
    return [{ k: "arr", of }, pos + 1];
  }
  // Anything else runs to the ";" (or closing bracket) at its own depth.
  const from = pos;
  let depth = 0;
  for (; pos < text.length; pos++) {
    const c = text[pos];
    if (c === '"') { pos = text.indexOf('"', pos + 1); continue; }
    if ("{(<[".includes(c)) depth++;
    else if ("})>]".includes(c)) { if (depth === 0) break; depth--; }
    else if ((c === ";" || c === ",") && depth === 0) break;
  }
  const word = text.slice(from, pos).trim();
  return [/^\w+$/.test(word) ? { k: "name", name: word } : { k: "other" }, pos];
}

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
  for (const m of text.matchAll(/export interface (\w+)(?: extends [^{]+)? (?=\{)/g))
    interfaces.set(m[1], parseTsType(text, m.index + m[0].length)[0]);
  const r = { file, imports, interfaces };
  dtsCache.set(file, r);
  return r;
}

function checkFields(value, dtsFile, iface, at, where) {
  if (!fs.existsSync(dtsFile)) return;
  const d = parseDts(dtsFile);
  const t = d.interfaces.get(iface);
  if (t) checkType(value, t, d, iface.slice(1), at, where);
  // else a type alias (IntOrString, Quantity, Time...): nothing to check
}

function checkType(value, t, d, typeName, at, where) {
  const sub = (k) => `${at}${at ? "." : ""}${k}`;
  if (t.k === "name") {
    const ref = d.imports.get(t.name);
    if (ref) checkFields(value, ref.file, ref.iface, at, where);
  } else if (t.k === "arr") {
    if (Array.isArray(value)) value.forEach((e, i) => checkType(e, t.of, d, typeName, `${at}[${i}]`, where));
  } else if (t.k === "obj" && value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) {
      const pt = t.props.get(k) || t.index;
      if (!pt) fail(where, `${sub(k)}: unknown field (not in ${typeName})`);
      else checkType(v, pt, d, typeName, sub(k), where);
    }
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
  // Base64 broken into lines (as kustomize writes long Secret values) is what the API server
  // accepts; the schema's "byte" format does not allow the newlines.
  const plain = o.kind === "Secret" && o.data
    ? { ...o, data: Object.fromEntries(Object.entries(o.data).map(([k, v]) => [k, String(v).replace(/\n/g, "")])) } : o;
  try {
    new m.Cls(plain).validate();
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
  checkHardening(spec, check);

  // The auth key: generated from a file that is not in the repository, and not a known key.
  if (cfg.auth_key_file) {
    const r = resolveFile(agent, spec, objs, cfg.auth_key_file);
    const secret = !r.error && objs.find((o) => o.kind === "Secret" && o.metadata?.name === r.name);
    if (secret) {
      const gen = GENERATED.get(secret);
      if (check(gen, `Secret ${r.name} is written in a manifest: anyone who has read the repository knows ` +
                     "its auth key. Generate it (secretGenerator from a file that is not committed)"))
        checkKeyNotKnown(r.value, check, gen.sources[r.key]);
    }
  }

  checkPdb(dep, objs, check);
  for (const [i, b] of (cfg.backends || []).entries()) checkBackendService(b, i, agent, spec, objs, check);

  // The config itself passes the agent's own check, with the secrets written to temp files.
  checkConfig(cfgText, objs, agent, spec, w, lkBin);
}

function checkHardening(spec, check) {
  const pod = spec.securityContext || {};
  for (const c of [...(spec.initContainers || []), ...(spec.containers || [])]) {
    const sc = c.securityContext || {};
    check((sc.runAsNonRoot ?? pod.runAsNonRoot) === true, `container ${c.name}: runAsNonRoot`);
    check(sc.readOnlyRootFilesystem === true, `container ${c.name}: readOnlyRootFilesystem`);
    check(sc.allowPrivilegeEscalation === false, `container ${c.name}: allowPrivilegeEscalation: false`);
    check((sc.capabilities?.drop || []).includes("ALL"), `container ${c.name}: capabilities.drop: [ALL]`);
    check(!sc.privileged, `container ${c.name}: not privileged`);
    check(c.resources?.requests?.cpu && c.resources?.requests?.memory && c.resources?.limits?.memory,
          `container ${c.name}: needs requests (cpu, memory) and a memory limit`);
  }
}

const WORKLOAD_KINDS = new Set(["Deployment", "StatefulSet", "DaemonSet"]);
const selects = (matchLabels, labels) =>
  Object.keys(matchLabels || {}).length > 0 &&
  Object.entries(matchLabels).every(([k, v]) => (labels || {})[k] === v);
const podLabels = (o) => o.spec?.template?.metadata?.labels || {};

// Every 64-hex-digit string in the files git tracks in the repository that holds validate.mjs:
// a key that is in the repository is known to everyone who can read it.
let knownKeysCache = null;
function knownKeys() {
  if (knownKeysCache) return knownKeysCache;
  knownKeysCache = new Map();
  const repo = path.resolve(HERE, "../..");
  const r = spawnSync("git", ["-C", repo, "ls-files", "-z"], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`git ls-files in ${repo} failed: ${r.stderr}`);
  for (const rel of r.stdout.split("\0").filter(Boolean)) {
    const file = path.join(repo, rel);
    let text;
    try {
      if (fs.statSync(file).size > (4 << 20)) continue;
      text = fs.readFileSync(file, "latin1");
    } catch { continue; }
    for (const m of text.matchAll(/(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])/g))
      if (!knownKeysCache.has(m[0].toLowerCase())) knownKeysCache.set(m[0].toLowerCase(), rel);
  }
  return knownKeysCache;
}

function checkKeyNotKnown(value, check, source) {
  const key = String(value).trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(key)) return; // checkConfig says "not 64 hex characters"
  const from = source ? ` (from ${path.basename(path.dirname(source))}/${path.basename(source)})` : "";
  const seen = knownKeys().get(key);
  check(!seen, `the auth key${from} is a known key: it is written in the repository's ${seen}. ` +
               "Make a random one: openssl rand -hex 32");
  // A pattern: the key is a shorter run repeated (at least twice; a longer period would be
  // met by chance, e.g. period 63 needs only the first and last digit to be equal).
  let period = 0;
  for (let p = 1; p <= 32 && !period; p++) if ([...key].every((c, i) => i < p || c === key[i - p])) period = p;
  check(!period, `the auth key${from} repeats every ${period} digits: a pattern, not a random key. ` +
                 "Make a random one: openssl rand -hex 32");
  check(new Set(key).size >= 8, `the auth key${from} uses only ${new Set(key).size} distinct hex digits: not a random key`);
}

// Evictions one pod at a time, never none: a budget that allows no eviction blocks node drains.
function checkPdb(dep, objs, check) {
  const pdbs = objs.filter((o) => o.kind === "PodDisruptionBudget" && selects(o.spec?.selector?.matchLabels, podLabels(dep)));
  if (!check(pdbs.length === 1, `want exactly one PodDisruptionBudget selecting the pods of Deployment/${dep.metadata.name}, found ${pdbs.length}`)) return;
  const pdb = pdbs[0], n = dep.spec.replicas;
  const count = (v) => (typeof v === "string" && v.endsWith("%") ? Math.ceil((Number(v.slice(0, -1)) * n) / 100) : Number(v));
  const allowed = pdb.spec.maxUnavailable !== undefined ? count(pdb.spec.maxUnavailable)
                : pdb.spec.minAvailable !== undefined ? n - count(pdb.spec.minAvailable) : 0;
  check(allowed === 1, `PodDisruptionBudget/${pdb.metadata.name} allows ${allowed} of ${n} pods to be evicted at once, want 1 ` +
                       "(one handoff at a time; 0 would block every node drain)");
  check(pdb.spec.unhealthyPodEvictionPolicy === "AlwaysAllow",
        `PodDisruptionBudget/${pdb.metadata.name}: unhealthyPodEvictionPolicy must be AlwaysAllow (while the backend is down ` +
        "every pod is unready, and the default policy would then block node drains)");
  for (const o of objs)
    if (o !== dep && WORKLOAD_KINDS.has(o.kind) && selects(pdb.spec.selector.matchLabels, podLabels(o)))
      check(false, `PodDisruptionBudget/${pdb.metadata.name} also selects the pods of ${o.kind}/${o.metadata.name}`);
}

// A backend whose host is a Service rendered with the app (the example Redis): the Service
// must lead to a container listening on that port, and that server must read its password from
// the same Secret key as the agent's password_file.
function checkBackendService(b, i, agent, spec, objs, check) {
  const m = /^([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(\d+)$/.exec(String(b.address || ""));
  const svc = m && objs.find((o) => o.kind === "Service" && o.metadata?.name === m[1]);
  if (!svc) return;
  const what = `backends[${i}] ${b.address}: Service/${svc.metadata.name}`;
  const port = (svc.spec.ports || []).find((p) => p.port === Number(m[2]));
  if (!check(port, `${what} has no port ${m[2]}`)) return;
  const wls = objs.filter((o) => WORKLOAD_KINDS.has(o.kind) && selects(svc.spec.selector, podLabels(o)));
  if (!check(wls.length === 1, `${what} selects the pods of ${wls.length} workloads, want 1`)) return;
  const pspec = wls[0].spec.template.spec;
  const target = port.targetPort ?? port.port;
  const server = (pspec.containers || []).find((c) => (c.ports || []).some((p) => p.name === target || p.containerPort === target));
  if (!check(server, `${what}: targetPort ${target} is no port of ${wls[0].kind}/${wls[0].metadata.name}`)) return;
  if (!b.password_file) return;
  const mine = resolveFile(agent, spec, objs, b.password_file);
  const theirs = (server.volumeMounts || []).map((mt) => {
    const v = (pspec.volumes || []).find((x) => x.name === mt.name);
    return v?.secret && (v.secret.items || []).map((it) => ({ name: v.secret.secretName, key: it.key }));
  }).flat().filter(Boolean);
  check(!mine.error && theirs.some((t) => t.name === mine.name && t.key === mine.key),
        `${what}: container ${server.name} does not read the agent's password_file (Secret ${mine.name}, key ${mine.key})`);
}

// Every workload: its selector picks its own pods and no one else's. Those not checked by
// checkDeployment (`done`) also get its selector and hardening checks.
function checkWorkloads(objs, where, done) {
  for (const o of objs.filter((x) => WORKLOAD_KINDS.has(x.kind))) {
    const w = `${where}: ${o.kind}/${o.metadata.name}`;
    const check = (cond, what) => { if (!cond) fail(w, what); return !!cond; };
    if (!done.has(o)) {
      check(selects(o.spec?.selector?.matchLabels, podLabels(o)), "spec.selector does not match the pod template's labels");
      checkHardening(o.spec.template.spec, check);
    }
    for (const other of objs)
      if (other !== o && WORKLOAD_KINDS.has(other.kind) && selects(o.spec?.selector?.matchLabels, podLabels(other)))
        check(false, `its selector also matches the pods of ${other.kind}/${other.metadata.name}`);
  }
}

// deploy/monitoring: the Service finds the app's agents, the ServiceMonitor finds the Service,
// the PrometheusRule carries exactly the checked rule file, the dashboard ConfigMap the JSON.
function checkMonitoring(objs, appObjs, dir, where) {
  const check = (cond, what) => { if (!cond) fail(where, what); return !!cond; };
  const deps = appObjs.filter((o) => o.kind === "Deployment");
  const agentOf = (d) => [...(d.spec.template.spec.initContainers || []), ...(d.spec.template.spec.containers || [])]
    .find((c) => (c.args || []).includes("agent"));
  const svcs = objs.filter((o) => o.kind === "Service");
  for (const svc of svcs) {
    const d = deps.find((x) => selects(svc.spec.selector, podLabels(x)));
    if (!check(d, `Service/${svc.metadata.name} selects no pods of ${MONITORED}`)) continue;
    const agent = agentOf(d);
    for (const p of svc.spec.ports || [])
      check((agent?.ports || []).some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort),
            `Service/${svc.metadata.name} port ${p.name}: targetPort ${p.targetPort} is not the agent's HTTP port`);
    check(svc.spec.publishNotReadyAddresses === true,
          `Service/${svc.metadata.name}: publishNotReadyAddresses must be true (an unready agent is the one to scrape)`);
  }
  const sms = objs.filter((o) => o.kind === "ServiceMonitor");
  check(sms.length >= 1, "no ServiceMonitor");
  for (const sm of sms) {
    const svc = svcs.find((x) => selects(sm.spec.selector?.matchLabels, x.metadata?.labels));
    if (!check(svc, `ServiceMonitor/${sm.metadata.name} selects none of the Services`)) continue;
    for (const e of sm.spec.endpoints || []) {
      check((svc.spec.ports || []).some((p) => p.name === e.port), `ServiceMonitor/${sm.metadata.name}: port ${e.port} is not a port name of Service/${svc.metadata.name}`);
      check(e.path === "/metrics", `ServiceMonitor/${sm.metadata.name}: path ${e.path}, want /metrics`);
    }
  }
  const rulesFile = path.join(dir, "leasekeeper-rules.yaml");
  const rules = objs.filter((o) => o.kind === "PrometheusRule");
  check(rules.length === 1, `want one PrometheusRule, found ${rules.length}`);
  if (rules.length === 1 && check(fs.existsSync(rulesFile), "leasekeeper-rules.yaml is missing")) {
    const [plain] = parseYamlDocs(fs.readFileSync(rulesFile, "utf8"), "leasekeeper-rules.yaml");
    check(isDeepStrictEqual(rules[0].spec?.groups, plain?.groups),
          `PrometheusRule/${rules[0].metadata.name}: spec.groups differs from leasekeeper-rules.yaml (keep them identical)`);
  }
  const dash = objs.filter((o) => o.kind === "ConfigMap" && o.metadata?.labels?.grafana_dashboard === "1");
  if (check(dash.length === 1, `want one ConfigMap labelled grafana_dashboard: "1", found ${dash.length}`)) {
    const files = Object.keys(dash[0].data || {});
    check(files.length === 1 && files[0].endsWith(".json"), `ConfigMap/${dash[0].metadata.name}: want one .json key, has ${files}`);
    try {
      const d = JSON.parse(dash[0].data[files[0]]);
      check(Array.isArray(d.panels) && d.panels.length > 0 && d.uid && d.title, `${files[0]}: not a Grafana dashboard (uid, title, panels)`);
    } catch (e) {
      check(false, `${files[0]}: ${e.message}`);
    }
  }
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

const rendered = {};

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const found = findKustomizations(path.join(args.repo, "deploy"), args.repo);
  for (const want of Object.keys(EXPECTED))
    if (!found.includes(want)) fail(want, "kustomization.yaml is missing");
  for (const rel of found) {
    const mode = EXPECTED[rel];
    if (!mode) {
      fail(rel, "a kustomization validate.mjs does not know: add it to EXPECTED (native, classic or monitoring)");
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
    rendered[rel] = objs;
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
    if (mode === "monitoring") {
      let appObjs = [];
      try {
        appObjs = render(path.join(args.repo, MONITORED), args.repo);
      } catch (e) {
        fail(rel, `render ${MONITORED}: ${e.message}`);
      }
      checkMonitoring(objs, appObjs, dir, rel);
      checkWorkloads(objs, rel, new Set());
      continue;
    }
    // The app's Deployment is the one with the agent; others (the example Redis) get the
    // checks every workload gets.
    const hasAgent = (o) => [...(o.spec.template.spec.initContainers || []), ...(o.spec.template.spec.containers || [])]
      .some((c) => (c.args || c.command || []).includes("agent"));
    const deps = objs.filter((o) => o.kind === "Deployment" && hasAgent(o));
    if (!deps.length) fail(rel, "no Deployment with the leasekeeper agent");
    for (const d of deps) {
      try {
        checkDeployment(d, objs, mode, rel, args.lkBin);
      } catch (e) {
        fail(`${rel}: Deployment/${d.metadata?.name}`, e.stack || e.message);
      }
    }
    checkWorkloads(objs, rel, new Set(deps));
  }
  if (args.dump) fs.writeFileSync(args.dump, JSON.stringify(rendered, null, 1));
  summary.failures = failures.length;
  console.log(`RESULT ${JSON.stringify(summary)}`);
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  console.log(`FAIL validate.mjs: ${e.stack || e}`);
  console.log(`RESULT ${JSON.stringify({ ...summary, failures: failures.length + 1 })}`);
  process.exit(1);
});

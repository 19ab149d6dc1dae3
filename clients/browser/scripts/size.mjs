// Fails when the minified ESM build is over the budget once gzipped.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const LIMIT = 5120;
const file = new URL("../dist/sessiond.mjs", import.meta.url);
let raw;
try {
  raw = readFileSync(file);
} catch {
  console.error("size: dist/sessiond.mjs is missing; run `npm run build` first");
  process.exit(1);
}
const gz = gzipSync(raw, { level: 9 }).length;
console.log(`dist/sessiond.mjs: ${raw.length} bytes minified, ${gz} bytes min+gzip (limit ${LIMIT})`);
if (gz > LIMIT) {
  console.error(`size: over budget by ${gz - LIMIT} bytes`);
  process.exit(1);
}

// Builds dist/sessiond.mjs (ESM, minified) and dist/sessiond.iife.js (global `Sessiond`).
import { build } from "esbuild";

const common = {
  entryPoints: ["src/index.ts"],
  bundle: true,
  minify: true,
  target: "es2020",
  platform: "browser",
  legalComments: "none",
  logLevel: "warning",
};

await build({ ...common, format: "esm", outfile: "dist/sessiond.mjs" });
await build({ ...common, format: "iife", globalName: "Sessiond", outfile: "dist/sessiond.iife.js" });

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import vm from "node:vm";
import * as esm from "../../dist/sessiond.mjs";

test("the ESM build exports createSessiond only", () => {
  assert.deepEqual(Object.keys(esm), ["createSessiond"]);
});

test("the script-tag build defines the global Sessiond.createSessiond", () => {
  const code = readFileSync(new URL("../../dist/sessiond.iife.js", import.meta.url), "utf8");
  const ctx = vm.createContext({});
  vm.runInContext(code, ctx);
  assert.equal(typeof vm.runInContext("Sessiond.createSessiond", ctx), "function");
});

test("min+gzip size stays within 5120 bytes", () => {
  const gz = gzipSync(readFileSync(new URL("../../dist/sessiond.mjs", import.meta.url)), { level: 9 }).length;
  assert.ok(gz <= 5120, `${gz} bytes`);
});

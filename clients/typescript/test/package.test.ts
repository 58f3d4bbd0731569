// The package as users get it (dist/, built by `npm run build` before the tests): its browser entry needs
// nothing of Node's, and the README's TypeScript examples compile, strictly, against it.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const README = resolve(PACKAGE, "../../README.md");

/** Every module `entry` imports, directly or not, among the package's own files; and the bare imports. */
function moduleGraph(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const pending = [entry];
  for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
    if (files.has(file)) {
      continue;
    }
    files.add(file);
    const source = readFileSync(file, "utf8");
    for (const [, specifier] of source.matchAll(/(?:import|export)\s[^"']*?from\s*["']([^"']+)["']/g)) {
      if (specifier === undefined) {
        continue;
      }
      if (specifier.startsWith(".")) {
        pending.push(resolve(dirname(file), specifier));
      } else {
        packages.add(specifier);
      }
    }
  }
  return { files, packages };
}

describe("the built package", () => {
  test("the browser entry (core) imports nothing of Node's", () => {
    const entry = join(PACKAGE, "dist/core.js");
    assert.ok(existsSync(entry), "dist/ is built before the tests");
    const { files, packages } = moduleGraph(entry);
    assert.ok(files.size > 5, `the graph was followed: ${[...files].join(", ")}`);
    const nodeOnly = [...packages].filter((p) => p.startsWith("node:") || p.startsWith("@connectrpc/connect-node"));
    assert.deepEqual(nodeOnly, []);
    // The Node entry does use Node's HTTP/2, through connect-node.
    assert.ok(moduleGraph(join(PACKAGE, "dist/index.js")).packages.has("@connectrpc/connect-node"));
  });

  test("every TypeScript example of README.md type-checks against the package", () => {
    const blocks = [...readFileSync(README, "utf8").matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1] ?? "");
    assert.ok(blocks.length >= 1, "README.md has TypeScript examples");
    // Inside the package's folder, so that "@modelplane/client" resolves to it as an installed package would.
    const directory = join(PACKAGE, "build/readme");
    rmSync(directory, { recursive: true, force: true });
    mkdirSync(directory, { recursive: true });
    const files = blocks.map((text, index) => {
      const file = join(directory, `example_${index}.mts`);
      writeFileSync(file, text);
      return file;
    });
    const tsc = join(PACKAGE, "node_modules/.bin/tsc");
    const options = ["--noEmit", "--strict", "--target", "es2022", "--module", "nodenext", "--types", "node"];
    const run = spawnSync(tsc, [...options, "--moduleResolution", "nodenext", ...files], { encoding: "utf8" });
    assert.equal(run.status, 0, run.stdout + run.stderr);
  });
});

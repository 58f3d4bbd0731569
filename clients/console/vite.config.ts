// Builds the console into the Python package (server/modelplane/server/console/static/), where the server
// serves it at "/": one HTML file, one script, one stylesheet, no CDN and nothing fetched at run time.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  // Relative asset URLs: the page works wherever the server mounts it.
  base: "./",
  resolve: {
    alias: {
      // The message types generated from protos/ for the TypeScript client, reused as they are.
      "@gen": here("../typescript/src/gen"),
    },
    // The generated files import @bufbuild/protobuf from outside this folder; one copy, the console's own,
    // pinned in its lock.
    dedupe: ["@bufbuild/protobuf"],
  },
  build: {
    outDir: here("../../server/modelplane/server/console/static"),
    emptyOutDir: true,
    // Stable file names, so a rebuild from the same source leaves the checked-in output unchanged and
    // `make console-check` can compare the two.
    rollupOptions: {
      output: {
        entryFileNames: "assets/console-[hash].js",
        chunkFileNames: "assets/[name]-[hash].js",
        assetFileNames: "assets/console-[hash][extname]",
      },
    },
    sourcemap: false,
    reportCompressedSize: false,
  },
});

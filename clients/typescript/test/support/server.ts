// A real modelplane server for the tests: `modelplane serve` from the repository's .venv on a free loopback
// port, on a throw-away Postgres database that is created for it and dropped after it.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { connect, type Connection } from "../../src/index.js";

const REPOSITORY = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const MODELPLANE = resolve(REPOSITORY, ".venv/bin/modelplane");
const PYTHON = resolve(REPOSITORY, ".venv/bin/python");
// Where the databases are made: MODELPLANE_TEST_DATABASE_URL (as the Python tests read it), else the
// Postgres on loopback.
const ADMIN_URL = process.env["MODELPLANE_TEST_DATABASE_URL"] ?? "postgresql://postgres@127.0.0.1:5432/postgres";
// Bounds a server's start so that a hang fails the test; not a performance expectation.
const STARTUP_LIMIT_MS = 60_000;

/** A free TCP port on loopback, as the operating system picks it. */
export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => (typeof address === "object" && address !== null ? done(address.port) : fail()));
    });
  });
}

/** Runs SQL against the admin database with asyncpg from the .venv (the tests need no Postgres driver). */
function adminSql(sql: string): void {
  const script = [
    "import asyncio, sys, asyncpg",
    "async def main():",
    "    conn = await asyncpg.connect(sys.argv[1], timeout=10)",
    "    try: await conn.execute(sys.argv[2])",
    "    finally: await conn.close()",
    "asyncio.run(main())",
  ].join("\n");
  const run = spawnSync(PYTHON, ["-c", script, ADMIN_URL, sql], { encoding: "utf8" });
  if (run.status !== 0) {
    throw new Error(`${sql} failed: ${run.stderr}`);
  }
}

/** A new, empty database; `drop()` removes it. */
export function throwAwayDatabase(): { url: string; drop: () => void } {
  const name = `mp_ts_${randomBytes(6).toString("hex")}`;
  adminSql(`CREATE DATABASE "${name}"`);
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => adminSql(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`) };
}

/** A bearer token of `role`, made with the CLI in the server's database. */
export function createToken(databaseUrl: string, role: string, name: string): string {
  const args = ["token", "create", "--database-url", databaseUrl, "--role", role, "--name", name];
  const run = spawnSync(MODELPLANE, args, { encoding: "utf8" });
  if (run.status !== 0) {
    throw new Error(`token create failed: ${run.stderr}`);
  }
  return run.stdout.trim();
}

/** A self-signed certificate for 127.0.0.1 made with the openssl tool, in a new temporary directory. */
export function selfSignedCertificate(): { certFile: string; keyFile: string } {
  const directory = mkdtempSync(join(tmpdir(), "mp-ts-tls-"));
  const certFile = join(directory, "server.crt");
  const keyFile = join(directory, "server.key");
  const args = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"];
  args.push("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", keyFile, "-out", certFile);
  const run = spawnSync("openssl", args, { encoding: "utf8" });
  if (run.status !== 0) {
    throw new Error(`openssl failed: ${run.stderr}`);
  }
  return { certFile, keyFile };
}

/** Whether the openssl tool is on the PATH. */
export const HAS_OPENSSL = spawnSync("openssl", ["version"]).status === 0;

/** One running server process. */
export class Server {
  private constructor(
    readonly address: string,
    readonly databaseUrl: string,
    private readonly process: ChildProcess,
    private readonly log: string[],
  ) {}

  /** Starts `modelplane serve` on `databaseUrl` (at `address`, or a free port) and waits until it serves. */
  static async start(
    databaseUrl: string,
    options: {
      auth: boolean;
      address?: string;
      tls?: { certFile: string; keyFile: string };
      metricsAddress?: string;
      env?: Readonly<Record<string, string>>;
    },
  ): Promise<Server> {
    const address = options.address ?? `127.0.0.1:${await freePort()}`;
    // One process, so that its "health: SERVING" line means the whole server serves: with several workers
    // each says it for itself, and a connection the kernel gives a worker still starting is answered
    // UNAVAILABLE until that worker is ready too.
    const args = ["serve", "--workers", "1", "--address", address, "--database-url", databaseUrl];
    args.push("--shutdown-grace", "1");
    if (!options.auth) {
      args.push("--no-auth");
    }
    if (options.tls !== undefined) {
      args.push("--tls-cert", options.tls.certFile, "--tls-key", options.tls.keyFile);
    }
    if (options.metricsAddress !== undefined) {
      args.push("--metrics-address", options.metricsAddress);
    }
    const child = spawn(MODELPLANE, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...serverEnvironment(), ...options.env } });
    const log: string[] = [];
    const server = new Server(address, databaseUrl, child, log);
    await new Promise<void>((ready, fail) => {
      const timer = setTimeout(() => fail(new Error(`the server never served:\n${log.join("")}`)), STARTUP_LIMIT_MS);
      const collect = (chunk: Buffer): void => {
        log.push(chunk.toString());
        if (log.join("").includes("health: SERVING")) {
          clearTimeout(timer);
          ready();
        }
      };
      child.stdout?.on("data", collect);
      child.stderr?.on("data", collect);
      child.once("exit", (code) => {
        clearTimeout(timer);
        fail(new Error(`the server exited ${code}:\n${log.join("")}`));
      });
    });
    return server;
  }

  /** What the server has logged so far. */
  get output(): string {
    return this.log.join("");
  }

  /** Kills the server (SIGKILL), as a crash would, and waits for its exit. */
  async kill(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) {
      return;
    }
    const exited = new Promise<void>((done) => this.process.once("exit", () => done()));
    this.process.kill("SIGKILL");
    await exited;
  }

  /** Stops the server with SIGTERM (gracefully: open streams end with UNAVAILABLE) and waits for its exit. */
  async stop(): Promise<number | null> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) {
      return this.process.exitCode;
    }
    const exited = new Promise<number | null>((done) => this.process.once("exit", (code) => done(code)));
    this.process.kill("SIGTERM");
    return exited;
  }
}

function serverEnvironment(): NodeJS.ProcessEnv {
  // The developer's MODELPLANE_* settings must not reach the server the test configures.
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("MODELPLANE_")));
}

/** What liveServer() starts: filled in before the first test, stopped and dropped after the last. */
export interface LiveServer {
  server: Server;
  databaseUrl: string;
  /** A connection without a token. */
  conn: Connection;
}

/** Registers hooks (in the file or the suite it is called in) that start a server on a throw-away database
 * before the tests, then run `prepare` on its connection, and stop it, close the connection and drop the
 * database after them. */
export function liveServer(
  options: { auth: boolean; tls?: { certFile: string; keyFile: string }; env?: Readonly<Record<string, string>> },
  prepare?: (conn: Connection) => Promise<void>,
): LiveServer {
  const live: Partial<LiveServer> = {};
  let database: ReturnType<typeof throwAwayDatabase> | undefined;
  before(async () => {
    database = throwAwayDatabase();
    live.databaseUrl = database.url;
    live.server = await Server.start(database.url, options);
    live.conn = connect(live.server.address);
    await prepare?.(live.conn);
  });
  after(async () => {
    live.conn?.close();
    await live.server?.stop();
    database?.drop();
  });
  return live as LiveServer;
}

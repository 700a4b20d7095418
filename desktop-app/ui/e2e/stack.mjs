// Real processes for the browser suite: a hub on its embedded store serving the built UI,
// two store agents enrolled over QUIC with one-time tokens, a chain's history backfilled by
// the simulator and a few seconds of live traffic, plus a third store that never synced.
//
// Binaries come from STORESYNC_BIN_DIR, else $CARGO_TARGET_DIR/debug, else
// ~/.cache/storesync/target/debug (tests/ci.sh builds them first).

import { spawn, spawnSync } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, openSync, readFileSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir, homedir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const UI_DIST = resolve(here, "../dist");

export const TENANT = "acme";
export const ADMIN = { username: "ada", password: "ada-password-1" };
export const MANAGER = { username: "max", password: "max-password-1", stores: ["s001"] };
/** The simulator's chain: store, time zone, region (as `storesync-sim chain` prints them). */
export const STORES = [
  { id: "s001", name: "Paris Rivoli", zone: "Europe/Paris", region: "west-eu", agent: true },
  { id: "s002", name: "Helsinki Kamppi", zone: "Europe/Helsinki", region: "north-eu", agent: true },
  { id: "s003", name: "London Soho", zone: "Europe/London", region: "uk", agent: false },
];

export function binDir() {
  if (process.env.STORESYNC_BIN_DIR) return process.env.STORESYNC_BIN_DIR;
  const target = process.env.CARGO_TARGET_DIR ?? join(homedir(), ".cache/storesync/target");
  return join(target, "debug");
}

function bin(name) {
  const path = join(binDir(), name);
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: build it first (cargo build -p storesync-hub -p storesync-edge -p storesync-sim)`);
  }
  return path;
}

function run(name, args, env = {}) {
  const r = spawnSync(bin(name), args, { env: { ...process.env, ...env }, encoding: "utf8", timeout: 300_000 });
  if (r.status !== 0) {
    throw new Error(`${name} ${args.join(" ")} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  }
  return r.stdout;
}

export function freeTcpPort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

function freeUdpPort() {
  return new Promise((ok, fail) => {
    const s = createSocket("udp4");
    s.on("error", fail);
    s.bind(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

export async function waitFor(what, timeoutMs, probe, intervalMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export class Stack {
  constructor() {
    this.root = mkdtempSync(join(tmpdir(), "storesync-ui-e2e-"));
    this.procs = [];
  }

  spawn(label, name, args, env = {}) {
    const log = join(this.root, `${label}.log`);
    const fd = openSync(log, "a");
    const child = spawn(bin(name), args, {
      env: { ...process.env, RUST_LOG: "info", ...env },
      stdio: ["ignore", fd, fd],
    });
    const entry = { label, child, log, exited: null };
    child.on("exit", (code, signal) => {
      entry.exited = { code, signal };
    });
    this.procs.push(entry);
    return entry;
  }

  hubArgs(...args) {
    return ["--config", join(this.root, "hub/hub.toml"), ...args];
  }

  hubEnv() {
    return {
      STORESYNC_HUB_LISTEN: this.http,
      STORESYNC_HUB_SYNC_LISTEN: this.sync,
      STORESYNC_HUB_UI_DIR: UI_DIST,
    };
  }

  async start() {
    if (!existsSync(join(UI_DIST, "index.html"))) {
      throw new Error(`${UI_DIST} has no build: npm run build first`);
    }
    this.http = `127.0.0.1:${await freeTcpPort()}`;
    this.sync = `127.0.0.1:${await freeUdpPort()}`;
    this.url = `http://${this.http}`;
    const hub = (...a) => run("storesync-hub", this.hubArgs(...a), this.hubEnv());
    run("storesync-hub", ["--config", join(this.root, "hub/hub.toml"), "init", "--data-dir", join(this.root, "hub")]);
    hub("tenant", "create", TENANT, "--name", "Acme Retail");
    for (const s of STORES) {
      hub("store", "add", "--tenant", TENANT, s.id, "--name", s.name, "--region", s.region, "--time-zone", s.zone);
    }
    run("storesync-hub", this.hubArgs("user", "add", "--tenant", TENANT, ADMIN.username, "--role", "admin"), {
      ...this.hubEnv(),
      STORESYNC_PASSWORD: ADMIN.password,
    });
    run(
      "storesync-hub",
      this.hubArgs("user", "add", "--tenant", TENANT, MANAGER.username, "--role", "store_manager", "--stores", MANAGER.stores.join(",")),
      { ...this.hubEnv(), STORESYNC_PASSWORD: MANAGER.password },
    );
    this.hub = this.spawn("hub", "storesync-hub", this.hubArgs("serve"), this.hubEnv());
    await waitFor("the hub", 30_000, async () => (await fetch(`${this.url}/healthz`)).ok);

    this.agents = {};
    for (const s of STORES.filter((s) => s.agent)) {
      const dir = join(this.root, `edge-${s.id}`);
      run("storesync-edge", ["init", "--data-dir", dir, "--tenant", TENANT, "--store", s.id, "--time-zone", s.zone]);
      const config = join(dir, "storesync-edge.toml");
      const api = `127.0.0.1:${await freeTcpPort()}`;
      writeFileSync(
        config,
        readFileSync(config, "utf8")
          .replace('api = "127.0.0.1:7400"', `api = "${api}"`)
          .replace('bridge = "127.0.0.1:7401"', 'bridge = ""'),
      );
      const token = hub("enroll-token", "--tenant", TENANT, "--store", s.id).trim();
      run("storesync-edge", ["enroll", "--config", config, "--hub", this.sync, "--token", token]);
      this.spawn(`edge-${s.id}`, "storesync-edge", ["run", "--config", config]);
      await waitFor(`the agent of ${s.id}`, 30_000, async () => (await fetch(`http://${api}/healthz`)).ok);
      this.agents[s.id] = api;
    }
    const agentArgs = Object.entries(this.agents).flatMap(([id, api]) => ["--agent", `${id}=${api}`]);
    run("storesync-sim", ["backfill", "--stores", String(STORES.length), "--days", "8", ...agentArgs]);
    run("storesync-sim", ["live", "--stores", String(STORES.length), "--rate", "6", "--seconds", "5", ...agentArgs]);
    await this.settled();
  }

  /** Waits until every agent's store is fully synced (empty backlog, watermark within a minute). */
  async settled() {
    const token = await this.token(ADMIN);
    await waitFor("the agents to sync everything", 120_000, async () => {
      const r = await this.api("/api/v1/stores", token);
      const synced = r.items.filter((s) => this.agents[s.storeId]);
      return (
        synced.length === Object.keys(this.agents).length &&
        synced.every((s) => s.backlog === 0 && s.completeUpTo && Date.now() - Date.parse(s.completeUpTo) < 60_000)
      );
    }, 500);
  }

  async token(user) {
    const r = await fetch(`${this.url}/oauth/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "password", tenant: TENANT, username: user.username, password: user.password }),
    });
    if (!r.ok) throw new Error(`token for ${user.username}: ${r.status}`);
    return (await r.json()).access_token;
  }

  async apiResponse(path, token, init = {}) {
    return fetch(`${this.url}${path}`, { ...init, headers: { Authorization: `Bearer ${token}`, ...(init.headers ?? {}) } });
  }

  async api(path, token) {
    const r = await this.apiResponse(path, token);
    if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
    return r.json();
  }

  /** Posts records to an agent's ingest API (no token: the agents run without auth here). */
  async agentPost(storeId, path, records) {
    const r = await fetch(`http://${this.agents[storeId]}/api/v1/${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(records),
    });
    if (!r.ok) throw new Error(`agent ${storeId} ${path}: ${r.status} ${await r.text()}`);
    return r.json();
  }

  logTail(label, lines = 40) {
    const p = this.procs.find((p) => p.label === label);
    if (!p) return "";
    return readFileSync(p.log, "utf8").split("\n").slice(-lines).join("\n");
  }

  async stop({ keep = false } = {}) {
    for (const p of [...this.procs].reverse()) {
      if (p.exited) continue;
      p.child.kill("SIGTERM");
      const gone = await waitFor(`${p.label} to stop`, 15_000, () => p.exited !== null, 100).catch(() => false);
      if (!gone) p.child.kill("SIGKILL");
    }
    if (!keep) rmSync(this.root, { recursive: true, force: true });
  }
}

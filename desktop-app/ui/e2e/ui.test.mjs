// The web UI in a real browser (the system Chromium through playwright-core) against a real
// hub and real enrolled agents (see stack.mjs). Each view leaves a screenshot in
// $UI_SCREENSHOTS, else $CARGO_TARGET_DIR/ui-screenshots, printed at the end.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { ADMIN, MANAGER, STORES, Stack, TENANT, waitFor } from "./stack.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS =
  process.env.UI_SCREENSHOTS ??
  join(process.env.CARGO_TARGET_DIR ?? join(homedir(), ".cache/storesync/target"), "ui-screenshots");

let stack;
/** One persistent context on a fresh profile directory; each test opens its own tab, and
 * since the UI keeps its session in sessionStorage, each tab starts signed out. */
let browser;
let profile;
let failed = false;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  for (const f of readdirSync(SHOTS)) if (f.startsWith("failed-")) rmSync(join(SHOTS, f));
  stack = new Stack();
  await stack.start();
  profile = mkdtempSync(join(tmpdir(), "storesync-ui-chromium-"));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    locale: "en-US",
    timezoneId: "UTC",
    acceptDownloads: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  if (failed && stack) {
    process.stderr.write(`--- hub log (tail) ---\n${stack.logTail("hub")}\n`);
  }
  await stack?.stop({ keep: failed });
  if (failed && stack) process.stderr.write(`process logs kept in ${stack.root}\n`);
  process.stdout.write(`UI screenshots: ${SHOTS}\n`);
});

/** A new tab (signed out), collecting script errors so a test can assert there were none. */
async function newPage(viewport = { width: 1280, height: 900 }) {
  const page = await browser.newPage();
  current = page;
  await page.setViewportSize(viewport);
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) page.errors.push(m.text());
  });
  return page;
}

async function signIn(page, user) {
  await page.goto(`${stack.url}/`);
  await page.fill("input[name=tenant]", TENANT);
  await page.fill("input[name=username]", user.username);
  await page.fill("input[name=password]", user.password);
  await page.click("button[type=submit]");
  await page.waitForSelector("[data-testid=who]");
}

async function shot(page, name, fullPage = true) {
  await page.waitForTimeout(400); // chart animations settle
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });
}

let current = null;

function check(name, fn) {
  test(name, async (t) => {
    try {
      await fn(t);
    } catch (e) {
      failed = true;
      if (current && !current.isClosed()) {
        const file = join(SHOTS, `failed-${name.replace(/\W+/g, "-").slice(0, 60)}.png`);
        await current.screenshot({ path: file, fullPage: true }).catch(() => {});
        process.stderr.write(`screenshot of the failure: ${file}\npage errors: ${JSON.stringify(current.errors)}\n`);
      }
      throw e;
    }
  });
}

const sumRevenue = (series) => series.reduce((a, g) => a + g.points.reduce((b, p) => b + p.revenue, 0), 0);
const near = (a, b, what) => assert.ok(Math.abs(a - b) < 0.005, `${what}: UI ${a} vs API ${b}`);

check("a wrong password is refused and an admin signs in", async () => {
  const page = await newPage();
  await page.goto(`${stack.url}/`);
  await page.fill("input[name=tenant]", TENANT);
  await page.fill("input[name=username]", ADMIN.username);
  await page.fill("input[name=password]", "not-the-password");
  await page.click("button[type=submit]");
  await page.waitForSelector("[data-testid=signin-error]");
  await shot(page, "01-sign-in-error");
  await page.fill("input[name=password]", ADMIN.password);
  await page.click("button[type=submit]");
  await page.waitForSelector("[data-testid=who]");
  assert.match(await page.textContent("[data-testid=who]"), /ada\s*Admin/);
  // A reload resumes the session (refresh token) instead of asking again.
  await page.reload();
  await page.waitForSelector("[data-testid=who]");
  assert.deepEqual(page.errors, []);
  await page.close();
});

check("the overview's totals are the API's, and it names the store that is behind", async () => {
  const page = await newPage();
  await signIn(page, ADMIN);
  const view = page.locator("[data-view=overview][data-from]");
  await view.waitFor();
  await page.waitForSelector("[data-chart=revenue-by-store][data-total]");
  const from = await view.getAttribute("data-from");
  const to = await view.getAttribute("data-to");
  const token = await stack.token(ADMIN);
  const api = await stack.api(
    `/api/v1/sales/series?bucket=hour&group_by=store&from=${from}&to=${to}`,
    token,
  );
  const apiTotal = sumRevenue(api.series);
  assert.ok(apiTotal > 0, "live traffic made sales today");
  const chartTotal = Number(await page.getAttribute("[data-chart=revenue-by-store]", "data-total"));
  near(chartTotal, apiTotal, "chart total");
  near(Number(await page.getAttribute("[data-kpi=revenue]", "data-value")), apiTotal, "revenue KPI");
  for (const s of STORES) {
    const group = api.series.find((g) => g.group === s.id);
    const expected = group ? group.points.reduce((a, p) => a + p.revenue, 0) : 0;
    near(Number(await page.getAttribute(`[data-store=${s.id}][data-revenue]`, "data-revenue")), expected, `store ${s.id}`);
  }
  // The store without an agent has never synced: the totals say so instead of
  // under-counting. The synced stores' watermarks trail now by a heartbeat at most.
  assert.ok(api.storesBehind.includes("s003"), JSON.stringify(api.storesBehind));
  for (const w of api.watermarks.filter((w) => w.storeId !== "s003")) {
    assert.ok(Date.now() - Date.parse(w.completeUpTo) < 120_000, JSON.stringify(w));
  }
  await page.waitForSelector("[data-testid=completeness][data-behind='1'] [data-behind-store=s003]");
  assert.equal(await page.getAttribute("[data-store=s003] [data-sync]", "data-sync"), "never");
  assert.equal(await page.getAttribute("[data-store=s001] [data-sync]", "data-sync"), "live");
  // The CSV export holds the drawn rows.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("[data-csv=revenue-by-store]")]);
  const csv = await (await download.createReadStream()).toArray().then((c) => Buffer.concat(c).toString());
  assert.match(csv, /^store,name,revenue_today,/);
  assert.equal(csv.trim().split("\r\n").length, STORES.length + 1);

  // A sale at an agent reaches the live ticker without a reload.
  await page.waitForSelector("[data-live=live]");
  await page.evaluate(() => {
    window.__stillHere = true;
  });
  await stack.agentPost("s001", "transactions", [
    {
      transactionId: `e2e-live-${Date.now()}`,
      storeId: "s001",
      timestamp: new Date().toISOString(),
      items: [{ itemId: "e2e-espresso", quantity: 2, price: 3.5 }],
      totalAmount: 7.0,
      paymentMethod: "card",
    },
  ]);
  await page.waitForSelector("[data-testid=ticker] [data-tick-store=s001]", { timeout: 60_000 });
  assert.equal(await page.evaluate(() => window.__stillHere), true, "no reload");
  await shot(page, "02-overview");
  assert.deepEqual(page.errors, []);
  await page.close();
});

check("the store dashboard draws the API's sales, top items and payment mix", async () => {
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(`${stack.url}/stores/s001`);
  await page.waitForSelector("[data-view=store][data-from] [data-chart=sales-by-time][data-total]");
  await page.click("button:has-text('7 days')");
  await page.waitForSelector("[data-view=store][data-bucket=day]");
  const view = page.locator("[data-view=store]");
  const from = await view.getAttribute("data-from");
  const to = await view.getAttribute("data-to");
  const token = await stack.token(ADMIN);
  const series = await stack.api(`/api/v1/sales/series?bucket=day&group_by=none&stores=s001&from=${from}&to=${to}`, token);
  await page.waitForFunction(
    (want) => Math.abs(Number(document.querySelector("[data-chart=sales-by-time]")?.getAttribute("data-total")) - want) < 0.005,
    sumRevenue(series.series),
  );
  const top = await stack.api(`/api/v1/sales/top-items?stores=s001&limit=10&from=${from}&to=${to}`, token);
  near(
    Number(await page.getAttribute("[data-chart=top-items]", "data-total")),
    top.items.reduce((a, i) => a + i.revenue, 0),
    "top items",
  );
  const basket = await stack.api(`/api/v1/sales/basket?stores=s001&from=${from}&to=${to}`, token);
  assert.equal(Number(await page.getAttribute("[data-kpi=transactions]", "data-value")), basket.transactions);
  near(Number(await page.getAttribute("[data-chart=payment-mix]", "data-total")), sumRevenue(series.series), "payment mix");
  await shot(page, "03-store-dashboard");
  assert.deepEqual(page.errors, []);
  await page.close();
});

check("inventory, sync status and a saved custom view render and reopen", async () => {
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.click("nav >> text=Inventory");
  await page.waitForSelector("[data-view=inventory] [data-chart=low-stock-by-store]");
  await page.fill("[data-testid=threshold]", "20");
  await shot(page, "04-inventory");

  await page.click("nav >> text=Sync");
  await page.waitForSelector("[data-testid=sync-table] [data-store=s003]");
  assert.equal(await page.getAttribute("[data-testid=sync-table] [data-store=s003] [data-sync]", "data-sync"), "never");
  await shot(page, "05-sync-status");

  await page.click("nav >> text=Explore");
  await page.selectOption("[data-testid=group-by]", "region");
  await page.selectOption("[data-testid=metric]", "transactions");
  await page.fill("[data-testid=view-name]", "Transactions by region");
  await page.click("[data-testid=save-view]");
  await page.waitForURL(/\/explore\/[0-9a-f]+$/);
  const url = page.url();
  await page.goto(`${stack.url}/`);
  await page.goto(url);
  await page.waitForSelector("[data-chart=explore][data-total]");
  assert.equal(await page.inputValue("[data-testid=group-by]"), "region");
  assert.equal(await page.inputValue("[data-testid=metric]"), "transactions");
  assert.match(await page.textContent("[data-testid=saved-views]"), /Transactions by region/);
  // Kept at the hub for this user: another tab (a new session) and the API see it.
  const views = await stack.api("/api/v1/views", await stack.token(ADMIN));
  const saved = views.items.find((v) => url.endsWith(`/explore/${v.id}`));
  assert.equal(saved?.name, "Transactions by region");
  assert.equal(saved?.view.groupBy, "region");
  const managerViews = await stack.api("/api/v1/views", await stack.token(MANAGER));
  assert.deepEqual(managerViews.items, []);
  await shot(page, "06-explore-saved-view");
  assert.deepEqual(page.errors, []);
  await page.close();
});

check("an alert raised at an agent arrives live and is acknowledged at the hub", async () => {
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.click("nav >> text=Alerts");
  await page.waitForSelector("[data-view=alerts] [data-live=live]");
  await page.evaluate(() => {
    window.__stillHere = true;
  });
  // A stock count of 2 is below the agent's low-stock threshold (5): the agent raises the
  // alert locally and syncs it.
  const sku = `e2e-sku-${Date.now()}`;
  await stack.agentPost("s001", "scans", [
    {
      scanId: `e2e-count-${Date.now()}`,
      storeId: "s001",
      gtin: "4006381333931",
      sku,
      purpose: "stockCount",
      quantity: 2,
      timestamp: new Date().toISOString(),
    },
  ]);
  const item = page.locator(`[data-alert][data-kind=low_stock][data-store=s001]:has-text("${sku}")`);
  await item.waitFor({ timeout: 60_000 });
  assert.equal(await page.evaluate(() => window.__stillHere), true, "arrived without a reload");
  await shot(page, "07-alerts-live", false);
  const alertId = await item.getAttribute("data-alert");
  await item.locator("[data-action=acknowledge]").click();
  await page.click("button:has-text('Acknowledged')");
  await page.waitForSelector(`[data-alert="${alertId}"][data-state=acknowledged]`);
  const token = await stack.token(ADMIN);
  const acked = await stack.api("/api/v1/alerts?state=acknowledged&stores=s001", token);
  const mine = acked.items.find((a) => a.alertId === alertId);
  assert.ok(mine, "the hub lists it as acknowledged");
  assert.equal(mine.state, "acknowledged");
  assert.equal(mine.changedBy, `admin:${ADMIN.username}`);
  await shot(page, "08-alerts-acknowledged", false);
  assert.deepEqual(page.errors, []);
  await page.close();
});

check("a store manager sees only the assigned store, also on a phone-sized screen", async () => {
  const page = await newPage({ width: 375, height: 812 });
  await signIn(page, MANAGER);
  assert.match(await page.textContent("nav"), /My store/);
  await page.click("nav >> text=My store");
  await page.waitForSelector("[data-view=store][data-store=s001] [data-chart=sales-by-time][data-total]");
  await shot(page, "09-manager-store-375px");
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 375, `no horizontal scrolling at 375 px (content is ${width} px wide)`);

  await page.goto(`${stack.url}/stores/s002`);
  await page.waitForSelector("[data-testid=not-found]");
  await shot(page, "10-manager-other-store-not-found");
  const token = await stack.token(MANAGER);
  const other = await stack.apiResponse("/api/v1/stores/s002", token);
  assert.equal(other.status, 404);
  const scoped = await stack.apiResponse("/api/v1/sales/series?stores=s002", token);
  assert.equal(scoped.status, 404);
  const stores = await stack.api("/api/v1/stores", token);
  assert.deepEqual(stores.items.map((s) => s.storeId), ["s001"]);

  await page.goto(`${stack.url}/`);
  await page.waitForSelector("[data-view=overview] [data-testid=store-grid]");
  assert.equal(await page.locator("[data-testid=store-grid] [data-store]").count(), 1);
  await shot(page, "11-manager-overview-375px");
  assert.deepEqual(page.errors, []);
  await page.close();
});

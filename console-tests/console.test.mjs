// End-to-end tests of the web console against a real gateway, agents and metrics sidecar
// (started by scripts/console-test.sh, which passes BASE_URL), in headless Chromium from
// Debian's package. Screenshots go to SCREENSHOTS (default console-tests/screenshots).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const BASE = process.env.BASE_URL;
const SHOTS = process.env.SCREENSHOTS || new URL("./screenshots/", import.meta.url).pathname;
assert.ok(BASE, "BASE_URL must point at the gateway (scripts/console-test.sh sets it)");
mkdirSync(SHOTS, { recursive: true });

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
});
after(async () => { await browser?.close(); });

/** A fresh page that records console errors and every request to another origin. */
async function open(viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  const foreign = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("request", (r) => { if (new URL(r.url()).origin !== new URL(BASE).origin) foreign.push(r.url()); });
  await page.goto(BASE + "/");
  return { page, context, errors, foreign };
}

async function devSignIn(page) {
  await page.getByTestId("dev-token-button").click();
  await page.getByTestId("submit-button").waitFor({ state: "visible" });
}

async function submitFromPage(page, mandate, ticks) {
  await page.getByTestId("mandate-input").fill(mandate);
  await page.getByTestId("max-ticks-input").fill(String(ticks));
  await page.getByTestId("submit-button").click();
}

test("the page loads with no console errors and talks to no other host", async () => {
  const { page, context, errors, foreign } = await open();
  await page.waitForLoadState("networkidle");
  await page.screenshot({ path: `${SHOTS}/01-loaded.png`, fullPage: true });
  assert.deepEqual(errors, []);
  assert.deepEqual(foreign, []);
  const csp = (await page.request.get(BASE + "/")).headers()["content-security-policy"];
  assert.match(csp, /default-src 'none'/);
  await context.close();
});

test("the agent count matches /agents/count", async () => {
  const { page, context } = await open();
  const want = await (await fetch(BASE + "/agents/count")).json();
  const shown = page.getByTestId("agent-count");
  await shown.filter({ hasText: `${want.count} agent` }).waitFor({ timeout: 10_000 });
  const text = await shown.textContent();
  assert.match(text, new RegExp(`^${want.count} agents? \\(${want.busy} busy, ${want.idle} idle\\)$`));
  await context.close();
});

test("a task submitted from the page is followed to completed, with its result", async () => {
  const { page, context, errors } = await open();
  await devSignIn(page);
  await submitFromPage(page, "Summarise the console test", 8);
  const status = page.getByTestId("task-status");
  await status.filter({ hasText: "in_progress" }).waitFor({ timeout: 20_000 });
  await page.getByTestId("task-actions").locator("li").first().waitFor({ timeout: 20_000 });
  await status.filter({ hasText: /^completed$/ }).waitFor({ timeout: 60_000 });
  const result = page.getByTestId("task-result");
  await result.waitFor({ state: "visible" });
  assert.match(await result.textContent(), /Offline demo summary of the mandate: Summarise the console test/);
  assert.match(await page.getByTestId("task-tick").textContent(), /^$|tick \d+ of 8/);
  // Followed live: the actions came in one by one, and the history row follows too.
  assert.ok((await page.getByTestId("task-actions").locator("li").count()) >= 2);
  assert.equal(await page.getByTestId("task-row").first().locator(".status").textContent(), "completed");
  await page.screenshot({ path: `${SHOTS}/02-completed.png`, fullPage: true });
  assert.deepEqual(errors, []);
  await context.close();
});

test("cancel stops a running task", async () => {
  const { page, context } = await open();
  await devSignIn(page);
  await submitFromPage(page, "A long task to cancel", 150);
  const status = page.getByTestId("task-status");
  await status.filter({ hasText: "in_progress" }).waitFor({ timeout: 30_000 });
  await page.getByTestId("cancel-button").click();
  await status.filter({ hasText: /^cancelled$/ }).waitFor({ timeout: 30_000 });
  await page.screenshot({ path: `${SHOTS}/03-cancelled.png`, fullPage: true });
  await context.close();
});

test("a parked call is approved from the page and a running task takes a message", async () => {
  const { page, context, errors } = await open();
  await devSignIn(page);
  await page.getByTestId("tools-input").fill("py");
  await submitFromPage(page, 'tool: py/delete_record {"name": "from-the-console"}', 5);
  const pending = page.getByTestId("pending-action");
  await pending.waitFor({ state: "visible", timeout: 30_000 });
  assert.equal(await page.getByTestId("task-status").textContent(), "requires_action");
  assert.equal(await page.getByTestId("pending-tool").textContent(), "py/delete_record");
  assert.match(await page.getByTestId("pending-arguments").textContent(), /from-the-console/);
  await page.getByTestId("message-input").fill("please be careful");
  await page.getByTestId("message-button").click();
  await page.getByTestId("message-status").filter({ hasText: "sent" }).waitFor({ timeout: 10_000 });
  await page.getByTestId("task-actions").filter({ hasText: "you: please be careful" }).waitFor({ timeout: 10_000 });
  await page.screenshot({ path: `${SHOTS}/07-pending.png`, fullPage: true });
  await page.getByTestId("approve-button").click();
  await page.getByTestId("task-status").filter({ hasText: /^completed$/ }).waitFor({ timeout: 60_000 });
  assert.match(await page.getByTestId("task-result").textContent(), /deleted from-the-console/);
  assert.equal(await pending.isVisible(), false);
  assert.deepEqual(errors, []);
  await context.close();
});

test("an incomplete task is extended from the page, and a cancelled one retried", async () => {
  const { page, context, errors } = await open();
  await devSignIn(page);
  // The offline model makes one call per tool line, then exits: three calls do not fit 2 ticks.
  await page.getByTestId("tools-input").fill("py");
  const calls = ["one", "two", "three"].map((t) => `tool: py/echo {"text": "${t}"}`).join("\n");
  await submitFromPage(page, calls, 2);
  const status = page.getByTestId("task-status");
  await status.filter({ hasText: /^incomplete$/ }).waitFor({ timeout: 60_000 });
  assert.equal(await page.getByTestId("extend-reason").textContent(), "tick");
  await page.getByTestId("task-result").waitFor({ state: "visible" });
  await page.screenshot({ path: `${SHOTS}/08-incomplete.png`, fullPage: true });
  await page.getByTestId("extend-ticks").fill("5");
  await page.getByTestId("extend-button").click();
  await status.filter({ hasText: /^completed$/ }).waitFor({ timeout: 60_000 });
  assert.equal(await page.getByTestId("extend-form").isVisible(), false);
  assert.match(await page.getByTestId("task-result").textContent(), /three/);
  await page.getByTestId("tools-input").fill("");

  await submitFromPage(page, "Cancel me, then retry me", 150);
  await status.filter({ hasText: "in_progress" }).waitFor({ timeout: 30_000 });
  await page.getByTestId("cancel-button").click();
  await status.filter({ hasText: /^cancelled$/ }).waitFor({ timeout: 30_000 });
  await page.getByTestId("retry-button").click();
  await status.filter({ hasText: /^completed$/ }).waitFor({ timeout: 60_000 });
  assert.deepEqual(errors, []);
  await context.close();
});

test("only an operator sees the dead letters, and a redrive is a dry run first", async () => {
  const { page, context, errors } = await open();
  await devSignIn(page);
  assert.equal(await page.getByTestId("dead-letters").isVisible(), false, "not for a user");
  const t = await page.evaluate(async () => (await (await fetch("/dev/token", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ sub: "console-ops", operator: true }) })).json()).token);
  await page.getByTestId("token-input").fill(t);
  await page.getByTestId("token-button").click();
  await page.getByTestId("dead-letters").waitFor({ state: "visible", timeout: 10_000 });
  assert.equal(await page.getByTestId("redrive-button").isDisabled(), true, "nothing to redrive before a dry run");
  await page.getByTestId("redrive-dry-button").click();
  await page.getByTestId("redrive-report").filter({ hasText: "Dry run" }).waitFor({ timeout: 10_000 });
  await page.screenshot({ path: `${SHOTS}/09-dead-letters.png`, fullPage: true });
  assert.deepEqual(errors, []);
  await context.close();
});

test("a bad token shows a clear message", async () => {
  const { page, context } = await open();
  await page.getByTestId("token-input").fill("not-a-real-token");
  await page.getByTestId("token-button").click();
  const msg = page.getByTestId("auth-message");
  await msg.filter({ hasText: "refused" }).waitFor({ timeout: 10_000 });
  assert.match(await msg.textContent(), /That token was refused: the bearer token is invalid or expired/);
  assert.equal(await page.getByTestId("submit-button").isVisible(), false);
  await page.screenshot({ path: `${SHOTS}/04-bad-token.png` });
  await context.close();
});

test("the ops chart renders points", async () => {
  const { page, context } = await open();
  const line = page.getByTestId("series-workers");
  await line.waitFor({ state: "attached", timeout: 30_000 });
  const points = Number(await line.getAttribute("data-points"));
  assert.ok(points >= 2, `the agents line has ${points} points`);
  assert.ok((await page.getByTestId("series-ready").count()) === 1, "queue depth is drawn");
  // The second agent joined a few seconds after the first: a scale-out marker.
  await page.getByTestId("scale-marker").first().waitFor({ state: "attached", timeout: 30_000 });
  await page.getByTestId("ops-chart").screenshot({ path: `${SHOTS}/05-ops-chart.png` });
  await context.close();
});

test("a phone-width screen has no horizontal scrolling", async () => {
  const { page, context } = await open({ width: 390, height: 844 });
  await devSignIn(page);
  await submitFromPage(page, "A task on a phone https://example.com/a-very-long-path/that-should-wrap-instead-of-scrolling", 3);
  await page.getByTestId("task-status").filter({ hasText: /^(completed|failed)$/ }).waitFor({ timeout: 60_000 });
  const { scroll, width } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
  assert.ok(scroll <= width, `page is ${scroll}px wide on a ${width}px screen`);
  await page.screenshot({ path: `${SHOTS}/06-phone.png`, fullPage: true });
  await context.close();
});

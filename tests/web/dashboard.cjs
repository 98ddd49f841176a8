// Drives the circus-linux dashboard in headless Chromium (Debian's) with playwright-core.
// Usage: node dashboard.cjs URL?token=T SCREENSHOT_PNG USER_DATA_DIR   (PLAYWRIGHT_CORE = path of the module)
// Prints one JSON line with what it saw; exits non-zero with a message when a step fails.
"use strict";

const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const [url, screenshot, userDataDir] = process.argv.slice(2);
const STEP = 15000; // ms per step: generous for a loaded 2-core CI machine

async function main() {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const result = {};
  try {
    const page = context.pages()[0] || (await context.newPage());
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url, { timeout: STEP }); // URL?token=...: circusd answers with a cookie and a redirect
    result.url = page.url();
    const card = page.locator('article.watcher[data-watcher="pool"]');
    await card.waitFor({ timeout: STEP });
    result.watchers = await page.locator("article.watcher h2.name").allTextContents();
    // A chart updates: the CPU canvas gains points as samples arrive over SSE.
    const canvas = card.locator('canvas[data-series="procs"]');
    await page.waitForFunction(
      (el) => Number(el.dataset.points || 0) >= 1, await canvas.elementHandle(), { timeout: STEP });
    const before = Number(await canvas.getAttribute("data-points"));
    await page.waitForFunction(
      ([el, n]) => Number(el.dataset.points || 0) > n, [await canvas.elementHandle(), before], { timeout: STEP });
    result.points_before = before;
    result.points_after = Number(await canvas.getAttribute("data-points"));
    result.numprocesses_before = Number(await card.getAttribute("data-numprocesses"));
    await card.locator('button[data-action="incr"]').click();
    await page.waitForFunction(
      ([el, n]) => Number(el.dataset.numprocesses) > n,
      [await card.elementHandle(), result.numprocesses_before], { timeout: STEP });
    result.numprocesses_after = Number(await card.getAttribute("data-numprocesses"));
    // Let the worker table catch up with the new worker before the picture is taken.
    await page.waitForFunction(
      (el) => el.querySelectorAll(".procs tbody tr").length >= 2, await card.elementHandle(), { timeout: STEP });
    result.tail = await page.locator("#tail").textContent();
    result.connection = await page.locator("#conn").textContent();
    await page.screenshot({ path: screenshot, fullPage: true });
    result.errors = errors;
  } finally {
    await context.close();
  }
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
});

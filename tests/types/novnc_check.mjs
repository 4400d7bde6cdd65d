// Opens a desktop_url in Chromium (run in the browser image with --network host) and prints what a
// person would see: noVNC's status line and the colour of one screen pixel of the remote desktop.
import { chromium } from '/opt/mcp/browser/node_modules/playwright/index.mjs';

const [url, x, y] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
try {
  const page = await browser.newPage({ viewport: { width: 1024, height: 768 } });
  // What went wrong, if anything: shown by the test when noVNC does not connect.
  const problems = [];
  page.on('requestfailed', (r) => problems.push(`${r.url()} failed: ${r.failure()?.errorText}`));
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`${r.url()} -> ${r.status()}`); });
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  // This Chromium shares the host's network namespace, where Docker keeps adding and removing
  // interfaces; Chromium then aborts requests in flight with ERR_NETWORK_CHANGED, a module of
  // noVNC is lost and the page never connects. Only for that error, the page is loaded again.
  let connected = false;
  for (let attempt = 0; attempt < 3 && !connected; attempt++) {
    problems.length = 0;
    const networkChanged = () => problems.some((p) => p.includes('ERR_NETWORK_CHANGED'));
    let stop = false;
    const lost = (async () => {  // resolves false as soon as the network changed under the page
      while (!stop && !networkChanged()) await new Promise((r) => setTimeout(r, 100));
      return false;
    })();
    await page.goto(url).catch(() => {});
    connected = await Promise.race([
      page.waitForFunction(() => document.getElementById('status').textContent !== 'Connecting…',
                           null, { timeout: 45000 }).then(() => true, () => false),
      lost]);
    stop = true;
    if (connected || !networkChanged()) break;
  }
  if (!connected) {
    console.log(JSON.stringify({ status: 'Connecting… (gave up after 45 s)', problems }));
    process.exit(0);
  }
  // The first full screen update: wait until the pixel is drawn (light), for at most 15 s, then
  // report what is there either way (a fixed wait of 1.5 s was too short on a loaded machine).
  await page.waitForFunction(([px, py]) => {
    const canvas = document.querySelector('#screen canvas');
    if (!canvas || !canvas.width) return false;
    const pixel = canvas.getContext('2d').getImageData(px, py, 1, 1).data;
    return Math.min(pixel[0], pixel[1], pixel[2]) > 150;
  }, [Number(x), Number(y)], { timeout: 15000, polling: 200 }).catch(() => {});
  const result = await page.evaluate(([px, py]) => {
    const canvas = document.querySelector('#screen canvas');
    const pixel = canvas.getContext('2d').getImageData(px, py, 1, 1).data;
    return { status: document.getElementById('status').textContent,
             width: canvas.width, height: canvas.height, pixel: Array.from(pixel.slice(0, 3)) };
  }, [Number(x), Number(y)]);
  result.problems = problems;
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}

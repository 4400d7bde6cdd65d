// Opens a desktop_url in Chromium (run in the browser image with --network host) and prints what a
// person would see: noVNC's status line and the colour of one screen pixel of the remote desktop.
import { chromium } from '/opt/mcp/browser/node_modules/playwright/index.mjs';

const [url, x, y] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
try {
  const page = await browser.newPage({ viewport: { width: 1024, height: 768 } });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById('status').textContent !== 'Connecting…',
                             null, { timeout: 20000 });
  await page.waitForTimeout(1500);  // the first full screen update
  const result = await page.evaluate(([px, py]) => {
    const canvas = document.querySelector('#screen canvas');
    const pixel = canvas.getContext('2d').getImageData(px, py, 1, 1).data;
    return { status: document.getElementById('status').textContent,
             width: canvas.width, height: canvas.height, pixel: Array.from(pixel.slice(0, 3)) };
  }, [Number(x), Number(y)]);
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}

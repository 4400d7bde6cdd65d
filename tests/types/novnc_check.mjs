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
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}

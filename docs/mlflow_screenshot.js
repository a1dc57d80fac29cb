// The README's docs/mlflow-study.png: a study in a real `mlflow ui`, shot with headless Chromium.
//   python -m cifar_sweep -m +experiment=quickstart dataset=synthetic trainer.accelerator=cpu \
//     'logger=[tensorboard,mlflow]'
//   mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db --port 5077 &
//   npm install playwright-core && node docs/mlflow_screenshot.js \
//     'http://127.0.0.1:5077/#/experiments/1/runs' docs/mlflow-study.png
// (apt-get install chromium; playwright-core drives it and downloads no browser.) It closes the
// assistant panel, opens the study's run to show its trials and picks the columns.
const { chromium } = require('playwright-core');
(async () => {
  const [url, out] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(url);
  await page.waitForTimeout(6000);
  await page.mouse.click(1363, 36);  // close the assistant panel
  await page.waitForTimeout(1000);
  await page.getByText('Model training', { exact: true }).click().catch(() => {});
  await page.waitForTimeout(2000);
  await page.mouse.click(318, 265);  // expand the study's run: its trials
  await page.waitForTimeout(2000);
  await page.getByText('Columns', { exact: true }).click();
  await page.waitForTimeout(1000);
  const search = page.getByPlaceholder('Search columns');
  for (const name of ['Dataset', 'Source', 'Models', 'val/acc_best', 'state', 'pruned_at_epoch', 'best']) {
    await search.fill(name);
    await page.waitForTimeout(500);
    const item = page.getByText(name, { exact: true }).last();
    if (await item.count()) { await item.click(); } else { console.log('no column', name); }
    await page.waitForTimeout(300);
  }
  await page.keyboard.press('Escape');
  await page.waitForTimeout(500);
  await page.mouse.click(700, 800);
  await page.waitForTimeout(1500);
  await page.screenshot({ path: out });
  await browser.close();
})();

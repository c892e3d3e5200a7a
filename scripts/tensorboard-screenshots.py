#!/usr/bin/env python3
"""Screenshots of TensorBoard's real UI on a folder of runs, for the docs: the HParams table,
its parallel-coordinates view, and the Profile tab's trace viewer.

    apt-get install chromium chromium-driver            # Debian's headless Chromium
    python3 -m venv /tmp/shots && /tmp/shots/bin/pip install selenium
    /tmp/shots/bin/python scripts/tensorboard-screenshots.py RUNS_DIR docs/

TensorBoard is the project's own (`scripts/tensorboard-venv.sh`, with the profile plugin).
Writes tensorboard-hparams-table.png, tensorboard-hparams-parallel.png and
tensorboard-profile-trace.png into the output folder.
"""
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from selenium import webdriver

ROOT = Path(__file__).resolve().parent.parent

# Finds the first element, through every shadow root, whose own text matches, and clicks it.
CLICK_TEXT = """
const want = arguments[0].toLowerCase();
function visit(node) {
  for (const el of node.querySelectorAll('*')) {
    const text = (el.innerText || el.textContent || '').trim().toLowerCase();
    if (text === want && el.children.length <= 2) { el.click(); return true; }
    if (el.shadowRoot && visit(el.shadowRoot)) return true;
  }
  return false;
}
return visit(document);
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    logdir, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    venv = subprocess.run(
        [ROOT / "scripts/tensorboard-venv.sh"], check=True, capture_output=True, text=True
    ).stdout.strip()
    port = free_port()
    tb = subprocess.Popen(
        [f"{venv}/bin/tensorboard", "--logdir", str(logdir), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(5)  # the first load of the runs
        options = webdriver.ChromeOptions()
        for arg in ["--headless=new", "--no-sandbox", "--disable-gpu",
                    "--window-size=1600,1000", "--hide-scrollbars"]:
            options.add_argument(arg)
        driver = webdriver.Chrome(options=options)
        try:
            driver.get(url + "#hparams")
            time.sleep(12)
            driver.save_screenshot(str(out / "tensorboard-hparams-table.png"))
            if not driver.execute_script(CLICK_TEXT, "Parallel Coordinates View"):
                print("warning: no parallel-coordinates tab found", file=sys.stderr)
            time.sleep(6)
            driver.save_screenshot(str(out / "tensorboard-hparams-parallel.png"))
            driver.get(url + "#profile")
            time.sleep(20)
            driver.save_screenshot(str(out / "tensorboard-profile-trace.png"))
        finally:
            driver.quit()
    finally:
        tb.terminate()
    for name in ["hparams-table", "hparams-parallel", "profile-trace"]:
        print(out / f"tensorboard-{name}.png")


if __name__ == "__main__":
    main()

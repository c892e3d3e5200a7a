#!/usr/bin/env python3
"""Screenshots of TensorBoard's real UI on a folder of runs, for the docs: the HParams table,
its parallel-coordinates view, and the profile plugin's trace viewer on the first profiled
run (the page the Profile tab embeds; the tab's own shell loads Google Charts from the
Internet, so offline it stays blank around it).

    apt-get install chromium chromium-driver            # Debian's headless Chromium
    python3 -m venv /tmp/shots && /tmp/shots/bin/pip install selenium
    /tmp/shots/bin/python scripts/tensorboard-screenshots.py RUNS_DIR docs/

TensorBoard is the project's own (`scripts/tensorboard-venv.sh`, with the profile plugin).
Writes tensorboard-hparams-table.png, tensorboard-hparams-parallel.png and
tensorboard-profile-trace.png into the output folder.
"""
import gzip
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

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


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
    return json.loads(gzip.decompress(body) if body[:2] == bytes([0x1f, 0x8b]) else body)


def trace_viewer_url(base):
    """The profile plugin's trace viewer on the first profiled run's first host."""
    runs = get_json(base + "data/plugin/profile/runs")
    if not runs:
        return None
    run = runs[0]
    q = urllib.parse.quote(run)
    host = get_json(base + f"data/plugin/profile/hosts?run={q}&tag=trace_viewer%23")[0]
    data = "/data/plugin/profile/data?" + urllib.parse.urlencode(
        {"run": run, "tag": "trace_viewer#", "host": host["hostname"]}
    )
    return (base + "data/plugin/profile/trace_viewer_index.html?is_streaming=false&is_oss=true"
            + "&trace_data_url=" + urllib.parse.quote(data, safe=""))


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
        options.binary_location = "/usr/bin/chromium"
        for arg in ["--headless=new", "--no-sandbox", "--disable-gpu",
                    "--window-size=1600,1000", "--hide-scrollbars"]:
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(url + "#hparams")
            time.sleep(12)
            driver.save_screenshot(str(out / "tensorboard-hparams-table.png"))
            if not driver.execute_script(CLICK_TEXT, "Parallel Coordinates View"):
                print("warning: no parallel-coordinates tab found", file=sys.stderr)
            time.sleep(6)
            driver.save_screenshot(str(out / "tensorboard-hparams-parallel.png"))
            trace = trace_viewer_url(url)
            if trace is None:
                print("warning: no profiled run under the folder", file=sys.stderr)
            else:
                driver.get(trace)
                time.sleep(10)
                driver.save_screenshot(str(out / "tensorboard-profile-trace.png"))
        finally:
            driver.quit()
    finally:
        tb.terminate()
    for name in ["hparams-table", "hparams-parallel", "profile-trace"]:
        print(out / f"tensorboard-{name}.png")


if __name__ == "__main__":
    main()

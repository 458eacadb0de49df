"""Screenshots of the built site in headless Chromium: what a reader sees on a guide page, an API
page and the front page, as PNGs.

    python docs/screenshots.py docs/_build/html docs/_build/screenshots
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

PAGES = {
    "index": "index.html",
    "guide-choosing": "guide/choosing.html",
    "guide-getting-started": "guide/getting-started.html",
    "api-top": "api/pyrovae.html",
    "api-inference": "api/inference.html",
    "api-entries": "api/entries.html",
    "notebook-06": "notebooks/06_linear_gaussian.html",
}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site (docs/_build/html)")
    parser.add_argument("out", type=Path, help="where the PNGs go")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args(argv)
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        print("screenshots: error: no Chromium (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    if not (args.site / "index.html").is_file():
        print(f"screenshots: error: no built site in {args.site} (run make docs)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name, page in PAGES.items():
        shot = args.out / f"{name}.png"
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--window-size={args.width},{args.height}", f"--screenshot={shot.resolve()}",
            (args.site / page).resolve().as_uri(),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not shot.is_file():
            print(f"screenshots: error: {page}: {done.stderr.strip()[-300:]}", file=sys.stderr)
            return 2
        print(shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

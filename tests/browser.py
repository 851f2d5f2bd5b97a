"""Render an HTML file in headless Chromium: dump the DOM after scripts ran, or screenshot it.

Used by tests/test_report.py; also a script for looking at a report by eye:

    python tests/browser.py report.html shot.png [WIDTH HEIGHT]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--enable-unsafe-swiftshader",
    "--virtual-time-budget=10000",
)


def find_chromium() -> str | None:
    """The path of a Chromium binary, or None."""
    for path in CANDIDATES:
        if Path(path).is_file():
            return path
    return shutil.which("chromium")


def _run(html_path: Path, *extra: str, timeout: float = 180) -> subprocess.CompletedProcess:
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium binary found")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *extra,
               Path(html_path).resolve().as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


def dump_dom(html_path: Path) -> str:
    """The DOM after the page's scripts ran (``--dump-dom``)."""
    return _run(html_path, "--dump-dom").stdout


def screenshot(html_path: Path, png_path: Path, width: int = 1400, height: int = 4000) -> Path:
    """Write a PNG screenshot of the page's top ``width`` × ``height`` pixels."""
    png_path = Path(png_path).resolve()
    _run(html_path, f"--screenshot={png_path}", f"--window-size={width},{height}")
    return png_path


if __name__ == "__main__":
    size = [int(x) for x in sys.argv[3:5]] or [1400, 4000]
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2]), *size))

"""Headless Chromium for the browser tests: Debian's build at /usr/bin/chromium, started with the flags
a closed network needs. Nothing here installs a browser; tests without it skip and say so."""
from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
MISSING = f"{CHROMIUM} is missing (install it with `apt-get install -y chromium`; the suite installs nothing)"

"""Shared by the report tests: the XSS payloads, headless Chromium, and a screenshot check."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from browser import CHROMIUM_FLAGS
from procs import run

TITLE = "XSS check report"
PAYLOADS = (
    "<script>document.title='pwned'</script>",
    "<img src=x onerror=\"document.title='pwned'\">",
    "<svg onload=\"document.title='pwned'\"></svg>",
    "</td></tr></table><script>document.body.appendChild(Object.assign(document.createElement('div'),"
    "{id:'pwned-marker'}))</script>",
    "<iframe src=\"javascript:document.title='pwned'\"></iframe>",
    "{{ 7*7 }} & <b id='bold-marker'>bold</b>",
)


@dataclass(frozen=True)
class Browser:
    """Headless Chromium: the DOM after load, and a screenshot."""

    executable: Path

    def _run(self, tmp: Path, *args: str) -> subprocess.CompletedProcess:
        profile = tmp / "chromium-profile"
        cmd = [str(self.executable), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        done = run(cmd, timeout=180)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, cmd, done.stdout, done.stderr)
        return done

    def dump_dom(self, page: Path, tmp: Path) -> str:
        return self._run(tmp, "--dump-dom", page.resolve().as_uri()).stdout

    def screenshot(self, page: Path, png: Path, tmp: Path, size: str = "1200,2000") -> Path:
        self._run(tmp, f"--screenshot={png}", f"--window-size={size}", "--hide-scrollbars", page.resolve().as_uri())
        return png


def colored_pixels(png: Path) -> tuple[int, int]:
    """(distinct colours, strongly coloured pixels) of an image; text and table lines are grey."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    distinct = len(np.unique(img.reshape(-1, 3), axis=0))
    saturated = int(((img.max(-1) - img.min(-1)) > 80).sum())
    return distinct, saturated

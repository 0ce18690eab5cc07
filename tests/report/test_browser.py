"""The report in a real browser (headless Chromium): no payload runs, the payload text shows as text,
and the plots are drawn."""
from __future__ import annotations

import re

from report_helpers import TITLE, colored_pixels


def test_no_payload_runs_and_the_payload_text_is_shown(report_page, chromium, tmp_path):
    dom = chromium.dump_dom(report_page, tmp_path)
    assert re.search(r"<title>(.*?)</title>", dom).group(1) == TITLE
    assert "pwned-marker\"" not in dom and 'id="bold-marker"' not in dom
    assert not re.search(r"<(script|iframe|svg)\b", dom)
    assert not re.search(r"<img[^>]*\bsrc=\"x\"", dom)
    # the DOM serialiser writes text with &lt; &gt; &amp; and keeps quotes
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "&lt;img src=x onerror=\"document.title='pwned'\"&gt;" in dom
    assert "{{ 7*7 }} &amp; &lt;b id='bold-marker'&gt;bold&lt;/b&gt;" in dom
    assert dom.count("<img src=\"data:image/png;base64,") == 7


def test_the_screenshot_shows_the_plots(report_page, chromium, tmp_path):
    png = chromium.screenshot(report_page, tmp_path / "report.png", tmp_path)
    assert png.stat().st_size > 20_000
    distinct, saturated = colored_pixels(png)
    assert distinct > 500, "a page of plain text has few colours"
    assert saturated > 5_000, "the coloured markers and bars of the plots are on screen"

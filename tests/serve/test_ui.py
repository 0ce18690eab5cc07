"""`personalign serve --ui`: the page is served whole (inline script and style, nothing fetched from
elsewhere), shows text only as text, and the calls it makes store a pick, show it in the history and
delete it; in headless Chromium (Playwright), a click on a candidate stores that pair."""
from __future__ import annotations

import re

import httpx
import pytest
from typer.testing import CliRunner

from personalign.cli import app as cli_app
from personalign.errors import UserError
from personalign.memory.store import MemoryStore
from personalign.serve.app import create_app, serve_in_background


@pytest.fixture()
def served(tiny_backend, tmp_path):
    store = MemoryStore(f"sqlite:///{tmp_path / 'users.db'}")
    app = create_app(tiny_backend, view="ica", memory=store, api_key="admin", user_keys={"ann-key": "ann"},
                     model_name="tiny</script><b>x</b>", ui=True, max_tokens_limit=16)
    with serve_in_background(app) as url:
        yield url.removesuffix("/v1"), store
    store.close()


def test_the_page_is_self_contained_and_never_parses_text_as_html(served):
    base, _ = served
    page = httpx.get(base + "/ui", timeout=30)  # no key needed for the page; every call it makes needs one
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # no CDN, nothing from elsewhere
    assert "default-src 'none'" in html and "connect-src 'self'" in html
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", html)
    assert "</script><b>" not in html and "tiny\\u003c/script\\u003e\\u003cb\\u003ex" in html  # the config is inert
    assert "/ui" not in httpx.get(base + "/openapi.json", timeout=30).json()["paths"]


def test_the_pages_calls_store_a_pick_show_it_and_delete_it(served):
    base, store = served
    headers = {"Authorization": "Bearer ann-key"}
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Plan my weekend."}], "user": "ann", "n": 2,
            "temperature": 1.0, "max_tokens": 16}
    reply = httpx.post(base + "/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert reply.status_code == 200, reply.text
    first, second = [c["message"]["content"] for c in reply.json()["choices"]]
    pick = {"user": "ann", "prompt": "Plan my weekend.", "chosen": second, "rejected": first}
    if first != second:
        assert httpx.post(base + "/v1/feedback", json=pick, headers=headers, timeout=60).status_code == 200
        history = httpx.get(base + "/v1/users/ann/history", headers=headers, timeout=60).json()["history"]
        assert history[-1]["chosen"] == second and history[-1]["rejected"] == first
    assert httpx.delete(base + "/v1/users/ann", headers=headers, timeout=60).status_code == 200
    assert store.history("ann") is None


def test_the_page_needs_the_user_memory(tiny_backend):
    with pytest.raises(UserError, match="--ui needs --memory"):
        create_app(tiny_backend, ui=True)
    res = CliRunner().invoke(cli_app, ["serve", "--ui"])
    assert res.exit_code == 2 and "--ui needs --memory" in res.output


MARKUP = "<img src=x onerror=\"window.pwned=1\"><b id=bold-marker>bold</b> plan my weekend"


def test_a_click_in_chromium_stores_the_pair_and_markup_stays_text(served):
    """Sign in, ask (the prompt is markup), click the second answer: that pair is in the store and in the
    page's history, shown as text (no element made from it, no script run); then delete the memory."""
    from browser import CHROMIUM, CHROMIUM_FLAGS, MISSING

    if not CHROMIUM.exists():
        pytest.skip(f"BROWSER TEST SKIPPED: {MISSING}")
    playwright = pytest.importorskip("playwright.sync_api")
    base, store = served
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS[1:]), headless=True)
        try:
            page = browser.new_page()
            page.on("dialog", lambda dialog: dialog.accept())  # "Delete everything stored about ann?"
            page.goto(base + "/ui")
            page.fill("#key", "ann-key")
            page.fill("#user", "ann")
            page.click("#enter")
            page.fill("#prompt", MARKUP)
            page.click("#ask")
            page.wait_for_selector("#pair:not(.hidden)", timeout=60_000)
            answers = [page.text_content(f"#answer-{i}") for i in (0, 1)]
            if answers[0] == answers[1]:
                pytest.fail(f"two samples at temperature 1 came out the same: {answers}")
            page.click("#pick-1")
            playwright.expect(page.locator("#status")).to_have_text("Thank you: your preference is stored.")
            page.wait_for_selector("#history li")
            shown = page.text_content("#history li")
            made = page.evaluate("[document.querySelectorAll('#history img, #history b').length, "
                                 "document.getElementById('bold-marker'), window.pwned === undefined]")
            stored = store.history("ann")["history"]
            page.click("#forget")
            playwright.expect(page.locator("#status")).to_have_text("Your memory is deleted.")
            after = store.history("ann")
        finally:
            browser.close()
    assert [(h["prompt"], h["chosen"], h["rejected"]) for h in stored] == [(MARKUP, answers[1], answers[0])]
    assert after is None  # deleted by the page's button
    assert MARKUP in shown and answers[1] in shown and answers[0] in shown
    assert made == [0, None, True]

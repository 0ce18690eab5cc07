"""`personalign serve --ui`: one self-contained page (inline script and style, no CDN, no build step)
where a person signs in with their key, sees two answers side by side, picks the better one (stored
as a preference through /v1/feedback), sees their history and deletes their memory. The page shows
every text with `textContent`; its settings are the only thing the server writes into it."""
from __future__ import annotations

import json
from importlib import resources

UI_PATH = "/ui"


def ui_page(model: str, *, rerank: bool, max_tokens: int) -> str:
    """The page, with its settings (the model's name, whether a user model reranks, the answer length)."""
    config = json.dumps({"model": model, "rerank": rerank, "max_tokens": max_tokens})
    safe = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # inert inside <script>
    page = resources.files("personalign").joinpath("resources", "serve_ui.html").read_text(encoding="utf-8")
    return page.replace("__CONFIG__", safe)

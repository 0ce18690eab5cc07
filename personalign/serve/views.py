"""The view rules of a server, in one home: which views it renders, which need the user memory, and
the view and template it serves when none is named (the one the model was trained with)."""
from __future__ import annotations

from typing import Literal, get_args

from personalign.errors import UserError
from personalign.models.card import log, trained_view, view_mismatch
from personalign.views.templates import ViewName, check_view

ServeView = Literal["none", "persona", "pba"]  # rendered from a request's own `persona`/`profile` fields
SERVE_VIEWS: tuple[str, ...] = get_args(ServeView)
MemoryView = ViewName  # every view: with --memory, ica and demo are rendered from the user memory
MEMORY_VIEWS: tuple[str, ...] = get_args(MemoryView)


def check_serve_view(view: str, template: str, *, memory: bool) -> None:
    """Refuse a view the server cannot render (ica and demo need the user memory) or a template that
    cannot render it."""
    if view in MEMORY_VIEWS and view not in SERVE_VIEWS and not memory:
        raise UserError(f"view {view!r} renders a user's stored history or demographic text: it needs --memory",
                        option="--view")
    if view not in MEMORY_VIEWS:
        raise UserError(f"view must be one of {', '.join(MEMORY_VIEWS)}; got {view!r}", option="--view")
    check_view(template, view)


def request_view(view: str) -> str:
    """The view a request's own `persona`/`profile` fields render under: the server's, where it takes them."""
    return view if view in SERVE_VIEWS else "none"


def serving_view(model: str | None, view: str | None, template: str | None, *, memory: bool) -> tuple[str, str]:
    """The view and template given, else what the model was trained with (when the server renders that view),
    else persona and chat; checked, with a warning when the given ones differ from the trained ones."""
    trained = trained_view(model) or {}
    usable = trained.get("view") in (MEMORY_VIEWS if memory else SERVE_VIEWS)
    chosen = (view or (trained["view"] if usable else "persona"),
              template or (trained.get("template", "chat") if usable else "chat"))
    if (warning := view_mismatch(trained or None, *chosen)) is not None:
        log.warning(warning)
    check_serve_view(*chosen, memory=memory)
    return chosen

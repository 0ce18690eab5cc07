"""`personalign serve`: an OpenAI-compatible server over a local (personalized) model."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from personalign.cli._common import AttnOpt, DTypeOpt, TrustRemoteCode, command_config, console, model_options
from personalign.data.templates import TemplateName
from personalign.errors import require_extra
from personalign.serve.prompts import ServeView


def serve(
    model: Annotated[Optional[str], typer.Option(help="Model dir or name (default: embedded SmolLM2).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    view: Annotated[Optional[ServeView], typer.Option(
        help="How `persona`/`profile` or the system message is rendered (default: the view the model was trained "
        "with, else persona).")] = None,
    template: Annotated[Optional[TemplateName], typer.Option(
        help="Prompt template preset (default: the model's training template, else chat).")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", envvar="PERSONALIGN_API_KEY", show_envvar=True,
        help="Require `Authorization: Bearer <key>` on every /v1 route (as vLLM's --api-key); never logged.")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Most requests generated together in one batch.")] = 8,
    batch_window_ms: Annotated[float, typer.Option(min=0.0, help="How long to wait for more requests to fill a batch.")] = 10.0,
    echo_prompt: Annotated[bool, typer.Option(help="Add the rendered prompt to each response (debugging).")] = False,
    dtype: DTypeOpt = None,
    attn_implementation: AttnOpt = None,
    trust_remote_code: TrustRemoteCode = None,
) -> None:
    """Serve /v1/models, /v1/chat/completions and /v1/completions (OpenAI-compatible), batching concurrent requests."""
    require_extra("serve", "personalign serve")
    from personalign.models.loading import check_model_dir
    from personalign.models.settings import ModelSettings
    from personalign.serve.app import check_port
    from personalign.serve.app import serve as run_server

    settings = command_config(ModelSettings, None, model_options(dtype, attn_implementation, trust_remote_code), None)
    check_model_dir(model, option="--model")
    check_port(host, port)
    view, template = _view_and_template(model, view, template)
    auth = "; API key required" if api_key else ""
    console.print(f"serving {model or 'the embedded default model'} on http://{host}:{port}/v1 "
                  f"(view {view}, template {template}{auth})", highlight=False)
    run_server(model, host=host, port=port, view=view, template=template, max_batch=max_batch,
               batch_window=batch_window_ms / 1000, echo_prompt=echo_prompt, model_settings=settings, api_key=api_key)


def _view_and_template(model: str | None, view: str | None, template: str | None) -> tuple[str, str]:
    """The options given, else what the model was trained with (when it is a view serve renders), else the defaults;
    a warning when the given ones differ from the trained ones."""
    from personalign.models.card import log, trained_view, view_mismatch
    from personalign.serve.prompts import SERVE_VIEWS

    trained = trained_view(model) or {}
    usable = trained.get("view") in SERVE_VIEWS
    chosen = (view or (trained["view"] if usable else "persona"),
              template or (trained.get("template", "chat") if usable else "chat"))
    if (warning := view_mismatch(trained or None, *chosen)) is not None:
        log.warning(warning)
    return chosen

"""`personalign serve`: an OpenAI-compatible server over a local (personalized) model."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from personalign.cli._common import AttnOpt, DTypeOpt, TrustRemoteCode, command_config, console, model_options
from personalign.errors import require_extra
from personalign.serve.views import MemoryView
from personalign.views.templates import TemplateName


def serve(
    model: Annotated[Optional[str], typer.Option(help="Model dir or name (default: embedded SmolLM2).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    view: Annotated[Optional[MemoryView], typer.Option(
        help="How `persona`/`profile` or the system message is rendered; with --memory, the view rendered from "
        "each user's memory (ica and demo need it). Default: the view the model was trained with, else persona.")] = None,
    template: Annotated[Optional[TemplateName], typer.Option(
        help="Prompt template preset (default: the model's training template, else chat).")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", envvar="PERSONALIGN_API_KEY", show_envvar=True,
        help="Require `Authorization: Bearer <key>` on every /v1 route (as vLLM's --api-key); never logged.")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Most requests generated together in one batch.")] = 8,
    batch_window_ms: Annotated[float, typer.Option(min=0.0, help="How long to wait for more requests to fill a batch.")] = 10.0,
    max_running: Annotated[int, typer.Option(min=1, help="Most batches decoded at once, one step each in turn, so a "
                                             "short chat need not wait for a long answer (1: one batch at a time).")] = 4,
    echo_prompt: Annotated[bool, typer.Option(help="Add the rendered prompt to each response (debugging).")] = False,
    memory: Annotated[Optional[str], typer.Option(
        "--memory", help="Per-user memory database (SQLAlchemy URL, e.g. sqlite:///users.db): chats render the view "
        "from the user's memory (OpenAI `user` field or X-User-Id); /v1/feedback and /v1/users/{id} exist. Keys "
        "scoped to one user come from $PERSONALIGN_USER_KEYS ({\"key\": \"user id\"}).")] = None,
    max_prompt_tokens: Annotated[int, typer.Option(min=16, help="--memory: token budget of a rendered prompt "
                                                   "(history is dropped, oldest first, to fit).")] = 2048,
    max_tokens_limit: Annotated[int, typer.Option(
        "--max-tokens-limit", min=1, help="The most new tokens a request may ask for per choice (above it: 400), "
        "so that one request cannot hold the model for minutes.")] = 2048,
    persona_refresh: Annotated[Optional[int], typer.Option(
        "--persona-refresh", min=1, help="--memory: after every N new pairs of a user, infer a new persona from "
        "their latest pair in the background (persona view).")] = None,
    persona_base_url: Annotated[Optional[str], typer.Option(
        "--persona-base-url", help="--persona-refresh: an OpenAI-compatible server to infer personas with (default: "
        "a second copy of the served model).")] = None,
    persona_model: Annotated[Optional[str], typer.Option(
        "--persona-model", help="--persona-refresh: the model name on --persona-base-url (or a local model).")] = None,
    user_model: Annotated[Optional[str], typer.Option(
        "--user-model", help="--memory: a user-model directory (personalign users train): every new pair refits the "
        "user's state before the reply; POST /v1/rewards scores responses under it.")] = None,
    directions: Annotated[Optional[str], typer.Option(
        "--directions", help="--user-model: a direction-model directory (personalign users directions train): each "
        "new pair stores its inferred direction vector, so pba renders profiles for users who sent none.")] = None,
    rerank: Annotated[int, typer.Option(
        "--rerank", min=0, max=16, help="--user-model: answer chats with the best of N samples under the user's "
        "reward (send return_candidates: true to see them).")] = 0,
    ui: Annotated[bool, typer.Option(
        "--ui", help="--memory: serve a page at /ui where a person signs in with their key, picks the better of two "
        "answers (stored as feedback), sees their history and deletes their memory.")] = False,
    access_log: Annotated[Optional[bool], typer.Option(
        "--access-log/--no-access-log", help="Log every request line (default: on, off with --memory: request "
        "paths name users).")] = None,
    dtype: DTypeOpt = None,
    attn_implementation: AttnOpt = None,
    trust_remote_code: TrustRemoteCode = None,
) -> None:
    """Serve /v1/models, /v1/chat/completions and /v1/completions (OpenAI-compatible), batching concurrent requests."""
    require_extra("serve", "personalign serve")
    from personalign.serve.views import serving_view

    view, template = serving_view(model, view, template, memory=memory is not None)  # before anything loads
    if ui and memory is None:
        from personalign.errors import UserError

        raise UserError("the page stores what a person picks in the user memory: --ui needs --memory", option="--ui")
    if persona_refresh is not None and memory is None:
        from personalign.errors import UserError

        raise UserError("--persona-refresh stores personas in the user memory: it needs --memory",
                        option="--persona-refresh")
    if (user_model is not None or directions is not None or rerank) and memory is None:
        from personalign.errors import UserError

        raise UserError("--user-model, --directions and --rerank keep each user's state in the user memory: they "
                        "need --memory", option="--user-model")
    if (directions is not None or rerank) and user_model is None:
        from personalign.errors import UserError

        raise UserError("--directions and --rerank need --user-model", option="--directions" if directions else "--rerank")
    if memory is not None:
        require_extra("memory", "personalign serve --memory")
    from personalign.models.loading import check_model_dir
    from personalign.models.settings import ModelSettings
    from personalign.serve.app import check_port
    from personalign.serve.app import serve as run_server

    settings = command_config(ModelSettings, None, model_options(dtype, attn_implementation, trust_remote_code), None)
    check_model_dir(model, option="--model")
    check_port(host, port)
    from personalign.serve.memory import user_keys_from_env

    user_keys = user_keys_from_env()
    store = None
    if memory is not None:
        from personalign.memory.store import MemoryStore

        store = MemoryStore(memory)  # opened (and migrated) before the model loads
    refresher = _persona_refresher(store, persona_refresh, persona_base_url, persona_model or model, settings)
    online = None
    if user_model is not None:
        from personalign.serve.adapt import OnlineUsers

        online = OnlineUsers(user_model, store, directions=directions)
    auth = "; API key required" if api_key or user_keys else ""
    scoped = f", {len(user_keys)} user-scoped keys" if user_keys else ""
    kept = f"; memory {store.counts()['users']} users" if store is not None else ""
    kept += f"; user model {online.representation}" + (f", rerank {rerank}" if rerank else "") if online else ""
    console.print(f"serving {model or 'the embedded default model'} on http://{host}:{port}/v1 "
                  f"(view {view}, template {template}{auth}{scoped}{kept})", highlight=False)
    if ui:
        console.print(f"the page: http://{host}:{port}/ui", highlight=False)
    run_server(model, host=host, port=port, view=view, template=template, max_batch=max_batch,
               batch_window=batch_window_ms / 1000, max_running=max_running, echo_prompt=echo_prompt,
               model_settings=settings, api_key=api_key,
               memory=store, user_keys=user_keys, max_prompt_tokens=max_prompt_tokens, persona_refresh=refresher,
               user_model=online, rerank=rerank, max_tokens_limit=max_tokens_limit, ui=ui,
               access_log=(store is None) if access_log is None else access_log)


def _persona_refresher(store, every: int | None, base_url: str | None, model: str | None, settings):
    """The background persona refresh of `--persona-refresh`, on its own backend (None when off)."""
    if store is None or every is None:
        return None
    from personalign.llm import make_backend
    from personalign.llm.base import BackendConfig
    from personalign.persona.infer import persona_of
    from personalign.serve.memory import PersonaRefresher

    kind = {"kind": "openai", "base_url": base_url} if base_url else {"kind": "local", **settings.load_kwargs()}
    backend = make_backend(BackendConfig(model=model, **kind))
    return PersonaRefresher(store, lambda pair: persona_of(backend, pair.prompt, pair.chosen, pair.rejected), every)

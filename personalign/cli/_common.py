"""Shared CLI plumbing: one console, the one error boundary of every command, the options several
commands share, and the one way a command builds its typed config (`command_config`).

Every command that runs a model or a backend reads a typed config (a pydantic model that lives
beside the library function it configures) from `--config FILE`, then its flags, then `key=value`
overrides, through `command_config`. Flags default to None ("not given") so that a config file's
values are never overwritten by a flag's default; the defaults live in the config models.

`BoundaryGroup` is the click group class of the `personalign` app and of every command group.
Around whatever command runs it turns every anticipated failure — a `UserError` (bad record,
config, option, output, model, backend, empty result), an `OSError` naming a file, a usage error
— into one line `error: <what> (<where>)` on stderr and exit code 2. Anything else is a bug: one
line `error: internal error: ...` and exit code 1. `--debug` (or `PERSONALIGN_DEBUG=1`) adds the
traceback.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar, get_args

import typer
from rich.console import Console
from rich.text import Text
from typer import _click as click  # typer vendors click; its exceptions are these classes
from typer.core import TyperGroup

from personalign.config import load_config
from personalign.errors import UserError
from personalign.llm.base import BackendKind
from personalign.llm.verdict import VerdictMode
from personalign.models.settings import AttnImplementation, DType
from personalign.records.io import OnInvalid

console = Console()
err_console = Console(stderr=True)

Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Write into an output directory that holds files this command did not write.")]
ConfigFile = Annotated[Optional[Path], typer.Option(
    "--config", "-c", help="YAML config file of this command's settings; flags and key=value overrides win over it.")]
Overrides = Annotated[Optional[list[str]], typer.Argument(
    help="key=value overrides (dotted keys for nested settings), e.g. backend.batch_size=4")]
Data = Annotated[Optional[str], typer.Option(
    "--data", help="Records: .jsonl, .json, .parquet, a save_to_disk directory or a hub dataset.")]
Kind = Annotated[Optional[BackendKind], typer.Option(
    "--backend", help=f"{' | '.join(get_args(BackendKind))}: a local transformers model, or an OpenAI-compatible "
    "server (default local).")]
Model = Annotated[Optional[str], typer.Option(
    "--model", help="local: model dir or name (default: embedded SmolLM2); openai: served model name.")]
BaseUrl = Annotated[Optional[str], typer.Option(
    "--base-url", help="openai: server URL, e.g. http://127.0.0.1:8000/v1.")]
ApiKeyEnv = Annotated[Optional[str], typer.Option(
    "--api-key-env", help="openai: NAME of the environment variable holding the key (default OPENAI_API_KEY).")]
BatchSize = Annotated[Optional[int], typer.Option(
    "--batch-size", min=1, help="Requests per generate call (local) and per cache write (default 8).")]
Concurrency = Annotated[Optional[int], typer.Option("--concurrency", min=1, help="openai: requests in flight (default 8).")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N records.")]
Cache = Annotated[Optional[Path], typer.Option("--cache", help="Generation cache JSONL (default: <out>.cache.jsonl).")]
PromptFileOpt = Annotated[Optional[Path], typer.Option(
    "--prompt-file", help="Your own prompt (YAML/JSON: system, shots, user with {slots}); see docs/prompts.md.")]
VerdictModeOpt = Annotated[Optional[VerdictMode], typer.Option(
    "--verdict-mode", help="generate (default): read the judge's text; logprob: the probabilities of its answers "
    "1/2, averaged over both orders (local models, or servers that return logprobs).")]
OnInvalidOpt = Annotated[Optional[OnInvalid], typer.Option(
    "--on-invalid", help="fail (default): stop at the first invalid record; skip: skip and count them.")]

DTypeOpt = Annotated[Optional[DType], typer.Option(
    "--dtype", help="Load the weights directly in this dtype (auto: the checkpoint's own; default float32).")]
AttnOpt = Annotated[Optional[AttnImplementation], typer.Option(
    "--attn-implementation", help="Attention kernel (default sdpa).")]
TrustRemoteCode = Annotated[Optional[bool], typer.Option(
    "--trust-remote-code", help="Run the model repository's own Python code (off unless given).")]

C = TypeVar("C")


def command_config(model: type[C], config: Path | None, options: dict[str, Any], overrides: list[str] | None) -> C:
    """A command's typed config: the YAML file, then the flags (`options`, dotted key -> value, None =
    not given), then the key=value overrides."""
    return load_config(model, config, overrides, {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()})


def model_options(dtype: str | None, attn_implementation: str | None, trust_remote_code: bool | None,
                  prefix: str = "") -> dict[str, Any]:
    """The model-loading flags (`ModelSettings`) as config keys, under `prefix` when it is given."""
    values = {"dtype": dtype, "attn_implementation": attn_implementation, "trust_remote_code": trust_remote_code}
    return {f"{prefix}.{k}" if prefix else k: v for k, v in values.items()}


def backend_options(kind: str | None, model: str | None, base_url: str | None, api_key_env: str | None,
                    batch_size: int | None, concurrency: int | None = None, prefix: str = "backend") -> dict[str, Any]:
    """The shared backend flags as dotted config keys under `prefix`."""
    values = {"kind": kind, "model": model, "base_url": base_url, "api_key_env": api_key_env,
              "batch_size": batch_size, "concurrency": concurrency}
    return {f"{prefix}.{k}": v for k, v in values.items()}


DEBUG_ENV = "PERSONALIGN_DEBUG"
EXIT_USER_ERROR = 2
EXIT_BUG = 1


_debug = {"on": False}  # set by --debug for the command being run


def debug_enabled() -> bool:
    return _debug["on"] or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def one_line(text: str) -> str:
    """`text` with its lines joined by '; ' (messages are one line on the terminal)."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe(exc: BaseException) -> tuple[str, int] | None:
    """(message, exit code) of an anticipated failure, or None for a bug."""
    if isinstance(exc, click.exceptions.ClickException):
        return one_line(exc.format_message()), EXIT_USER_ERROR
    if isinstance(exc, UserError):
        where = exc.where()
        return one_line(exc.message) + (f" ({where})" if where else ""), EXIT_USER_ERROR
    if isinstance(exc, OSError):
        if exc.filename is not None:
            what = exc.strerror or type(exc).__name__
            extra = f" -> {exc.filename2}" if exc.filename2 else ""
            return f"{what} ({exc.filename}{extra})", EXIT_USER_ERROR
        return one_line(str(exc) or type(exc).__name__), EXIT_USER_ERROR
    if isinstance(exc, ValueError):  # library checks of arguments and data raise ValueError with a message
        return one_line(str(exc) or type(exc).__name__), EXIT_USER_ERROR
    return None


def report_error(exc: BaseException) -> int:
    """Print `exc` as one line (plus the traceback under --debug); returns the exit code."""
    described = describe(exc)
    if described is None:
        message = f"internal error: {type(exc).__name__}: {one_line(str(exc))} (rerun with --debug for the traceback)"
        code = EXIT_BUG
    else:
        message, code = described
    if debug_enabled() and not isinstance(exc, click.exceptions.UsageError):
        err_console.print("".join(traceback.format_exception(exc)), markup=False, highlight=False, soft_wrap=True)
    err_console.print(Text("error: ", style="bold red") + Text(message), highlight=False, soft_wrap=True)
    return code


class _WarningHandler(logging.Handler):
    """`personalign` log warnings as `warning: ...` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(Text("warning: ", style="bold yellow") + Text(one_line(record.getMessage())),
                          highlight=False, soft_wrap=True)


def _setup_logging() -> None:
    logger = logging.getLogger("personalign")
    if not any(isinstance(h, _WarningHandler) for h in logger.handlers):
        logger.addHandler(_WarningHandler(logging.WARNING))


class BoundaryGroup(TyperGroup):
    """A typer group whose `main` is the error boundary described in the module docstring."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        _setup_logging()
        _debug["on"] = False
        try:
            result = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                  standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            code = exc.exit_code
        except typer.Abort:
            err_console.print("aborted", highlight=False)
            code = 130
        except Exception as exc:  # noqa: BLE001 - this is the boundary
            code = report_error(exc)
        if standalone_mode:
            sys.exit(code)
        return code


def _print_version(value: bool) -> None:
    if value:
        from personalign.version import __version__

        typer.echo(f"personalign {__version__}")
        raise typer.Exit()


def root_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error, not just its one-line message.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Personalized preference alignment: data, views, models, training and evaluation."""
    _debug["on"] = debug


def new_app(**kwargs: Any) -> typer.Typer:
    """A command group with the error boundary."""
    return typer.Typer(cls=BoundaryGroup, no_args_is_help=True, pretty_exceptions_show_locals=False, **kwargs)


def main_process() -> bool:
    """False in the other processes of an `accelerate launch`: they share the work, the main one reports."""
    from personalign.models.loading import process_state

    return process_state().is_main_process

"""The `personalign` command line: one typer app, one module per command group.

The command modules import torch, transformers and the library behind them, so they are imported
only when their command runs (`LazyGroup`): `personalign --help` and `--version` stay fast.
"""
from __future__ import annotations

import importlib
from typing import Any

import typer
from typer import _click as click
from typer.core import TyperCommand

from personalign.cli._common import BoundaryGroup, new_app, root_options

# name -> (module, attribute: a typer app (a group) or a function (a command), one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "quickstart": ("quickstart", "quickstart", "Run the whole method offline: data, validation, user models (the "
                   "headline), views, personas, LoRA DPO, accuracy before/after, generations, report."),
    "train": ("train", "train", "Train a policy with DPO, SFT or PRO; resumable, and scales with "
              "`accelerate launch -m personalign train`."),
    "export": ("train", "export", "Write a trained policy as a Hugging Face model directory (adapter, or merged "
               "full model), with its model card."),
    "serve": ("serve", "serve", "Serve /v1/models, /v1/chat/completions and /v1/completions (OpenAI-compatible), "
              "batching concurrent requests."),
    "report": ("report", "report", "Accuracy, win rates, training curves, persona saliency, diversity and examples "
               "in one HTML file."),
    "data": ("data", "app", "Validate, inspect, synthesize, tokenize and render preference data."),
    "models": ("models", "app", "Show and prepare the models personalign can load."),
    "eval": ("eval", "app", "Evaluate policies: alignment accuracy, generation, judge win rates, rewards."),
    "persona": ("persona", "app", "Infer personas, judge them, word saliency, retrieval."),
    "users": ("users", "app", "User models learned from feedback: train, evaluate with k shots, preference directions."),
    "memory": ("memory", "app", "The memory database's schema: current revision, upgrade, history (alembic)."),
}


class _Placeholder(TyperCommand):
    """A command known by name and help only (for listings); `LazyGroup` swaps in the real one to run it."""


def load_command(name: str) -> click.Command:
    """The click command (or group) of `COMMANDS[name]`, importing its module."""
    module_name, attr, short = COMMANDS[name]
    module = importlib.import_module(f"personalign.cli.{module_name}")
    target = getattr(module, attr)
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
        command.help = command.help or short
    else:
        epilog = getattr(module, "EPILOGS", {}).get(attr)  # e.g. every config key of `train`
        single = typer.Typer(rich_markup_mode="markdown" if epilog else "rich")
        single.command(name, epilog=epilog() if epilog else None)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(BoundaryGroup):
    """The root group: lists `COMMANDS` without importing them; imports one when it is resolved to run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in COMMANDS if n not in self.commands)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        if found is not None or name not in COMMANDS:
            return found
        return _Placeholder(name, help=COMMANDS[name][2], short_help=COMMANDS[name][2])

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[Any, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, _Placeholder):
            command = self.commands[name] = load_command(name)
        return name, command, rest


app = typer.Typer(cls=LazyGroup, no_args_is_help=True, pretty_exceptions_show_locals=False, name="personalign",
                  help="Personalized preference alignment: data, views, models, training and evaluation.")
app.callback()(root_options)

__all__ = ["app", "new_app", "load_command", "COMMANDS"]

"""The `personalign` command line: one typer app, one module per command group."""
from __future__ import annotations

import typer

from personalign.cli import data, eval, models, persona, quickstart, report, serve, train

app = typer.Typer(
    name="personalign",
    help="Personalized preference alignment: data, views, models, training and evaluation.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data.app, name="data", help="Validate, inspect, synthesize and render preference data.")
app.add_typer(models.app, name="models", help="Show and prepare the models personalign can load.")
app.add_typer(eval.app, name="eval", help="Evaluate policies: alignment accuracy, generation, judge win rates, rewards.")
app.add_typer(persona.app, name="persona", help="Infer personas, judge them, word saliency, retrieval.")
app.command("quickstart")(quickstart.quickstart)
app.command("train")(train.train)
app.command("export")(train.export)
app.command("serve")(serve.serve)
app.command("report")(report.report)

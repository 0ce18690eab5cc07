"""The `personalign` command line: one typer app, one module per command group."""
from __future__ import annotations

from personalign.cli import data, eval, models, persona, quickstart, report, serve, train
from personalign.cli._common import new_app, root_options

app = new_app(name="personalign", help="Personalized preference alignment: data, views, models, training and evaluation.")
app.callback()(root_options)
app.add_typer(data.app, name="data", help="Validate, inspect, synthesize and render preference data.")
app.add_typer(models.app, name="models", help="Show and prepare the models personalign can load.")
app.add_typer(eval.app, name="eval", help="Evaluate policies: alignment accuracy, generation, judge win rates, rewards.")
app.add_typer(persona.app, name="persona", help="Infer personas, judge them, word saliency, retrieval.")
app.command("quickstart")(quickstart.quickstart)
app.command("train")(train.train)
app.command("export")(train.export)
app.command("serve")(serve.serve)
app.command("report")(report.report)

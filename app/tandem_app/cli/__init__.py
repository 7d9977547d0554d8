"""The ``tandem`` command. One module per noun; each registers a Typer sub-app.

Noun modules import heavy libraries (torch, pyserini) inside their commands only, so
``tandem --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="tandem",
    help="Tandem: hybrid product search (BM25 + generative retrieval) — build, train, serve, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Tandem: hybrid product search (BM25 + generative retrieval)."""


#: (module under tandem_app.cli, how it attaches). A module exposing ``app`` becomes a sub-command
#: group named after the noun; one exposing ``register(app)`` adds top-level commands.
NOUNS: list[str] = [
    "index", "eval",
    "stream", "registry",
    "doctor", "health", "demo", "serve", "search", "ids", "train", "intent", "fusion", "pipelines",
    "canary", "failed",
]

for _noun in NOUNS:
    _mod = importlib.import_module(f"tandem_app.cli.{_noun}")
    if hasattr(_mod, "register"):
        _mod.register(app)
    else:
        app.add_typer(_mod.app, name=_noun)


def main() -> None:
    """Console entry point."""
    app()

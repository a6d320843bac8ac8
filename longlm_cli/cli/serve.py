"""`longlm serve`: the OpenAI-compatible server (longlm_cli/serve). Parses its options, checks the optional extra
and the exposure, and runs the server until Ctrl-C or SIGTERM."""

from __future__ import annotations

import click

from .app import cli
from .options import (
    FiniteFloat,
    apply_options,
    extension_method_option,
    extension_options,
    extension_settings,
    loading_options,
)

SERVE_OPTIONS = [
    click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on."),
    click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port."),
    click.option(
        "--api-key",
        envvar="LONGLM_API_KEY",
        metavar="KEY",
        help="Answer only requests with `Authorization: Bearer KEY` (also from $LONGLM_API_KEY).",
    ),
    click.option(
        "--insecure", is_flag=True, help="Allow a non-loopback --host without --api-key (anyone who reaches it)."
    ),
    extension_method_option(
        "What runs when a prompt exceeds the model's window (a request's `longlm` object may choose)."
    ),
    click.option("--no-tuned", is_flag=True, help="Ignore the settings `longlm tune` saved for this model."),
    click.option(
        "--no-cache",
        is_flag=True,
        help="Keep prompts in memory only, not in the document cache (where long ones outlive a restart).",
    ),
    click.option(
        "--max-queue",
        type=click.IntRange(min=0),
        default=8,
        show_default=True,
        help="Requests that may wait behind the running one; more get 503.",
    ),
    click.option(
        "--max-body", type=click.IntRange(min=1), default=64, show_default=True, metavar="MIB", help="Largest request."
    ),
    click.option(
        "--request-timeout",
        type=FiniteFloat(min=0.0, min_open=True),
        default=3600.0,
        show_default=True,
        metavar="SECONDS",
        help="Longest a request may take, waiting included.",
    ),
    click.option("--cors", multiple=True, metavar="ORIGIN", help="Allow browser requests from ORIGIN (repeatable)."),
    click.option("--model-name", metavar="NAME", help="The model's name in the API.  [default: its own]"),
]


@cli.command()
@loading_options
@extension_options
@apply_options(SERVE_OPTIONS)
def serve(**options) -> None:
    """Serve the model over OpenAI's API (chat completions, completions, models), reading past its window.

    Point any OpenAI client at the printed address, e.g. OpenAI(base_url="http://127.0.0.1:8000/v1",
    api_key="unused"). Documents go in the messages; a request may choose the extension with
    extra_body={"longlm": {"extension": "dca", "window": 1024, "group_size": 8}}. Ctrl-C stops.
    """
    from ..serve.server import missing_extra

    hint = missing_extra()
    if hint:
        raise click.ClickException(hint)
    _serve(options)


def _serve(options: dict) -> None:
    from ..answering.pipeline import ModelSettings
    from ..doccache.store import DocCacheSettings
    from ..serve.server import Address, check_exposure
    from ..serve.server import serve as run_server
    from ..serve.settings import ServeSettings

    check_exposure(options["host"], options["api_key"], options["insecure"])
    extension = extension_settings(options)

    def ready(url: str, engine) -> None:
        reach = f"up to {engine.capacity():,} tokens with {engine.method}"
        click.echo(f"Serving {engine.loaded.name} (L={engine.context_window:,}; {reach}) at {url}", err=True)
        click.echo("Ctrl-C stops.", err=True)

    run_server(
        model=ModelSettings.from_options(options),
        extension=extension,
        settings=ServeSettings.from_options(options),
        address=Address(options["host"], options["port"]),
        cache=DocCacheSettings.from_options(options),
        on_ready=ready,
    )

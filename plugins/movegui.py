"""movegui: ``dcmpipe move`` as a local web page (dcm_movegui).

``dcmpipe movegui`` serves a form on 127.0.0.1 whose fields are generated
from the ``move`` command's own switches (so a new switch appears in both),
previews the planned tree as a dry run with one checkbox per study, runs the
move with a live progress bar and a Cancel button, and shows the summary.
The server lives in ``_movegui_server``; the page in ``movegui_data/``.

Step: transform ``study-select`` (keep only the studies ticked in the page).
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from dcmpipe import Skip, Transform, hookimpl, option


@dataclass(frozen=True)
class StudySelectOptions:
    keep: list[str] = option(factory=list, help="Study Instance UIDs to process; empty: every study")


class StudySelect(Transform):
    """Keep only the files of the listed studies (the boxes ticked in the preview); others stay in place."""

    id = "study-select"
    Options = StudySelectOptions
    # the preview shows these per study; declaring them makes the header stage read them
    tags = ("StudyInstanceUID", "StudyID", "StudyDate", "StudyDescription", "PatientName", "PatientID",
            "SeriesInstanceUID", "SeriesNumber", "SeriesDescription")

    def __init__(self, options, context):
        super().__init__(options, context)
        self.wanted = frozenset(options.keep)

    def transform(self, item):
        if self.wanted and item.get("StudyInstanceUID", "") not in self.wanted:
            raise Skip("study not selected")
        return item


@hookimpl
def dcmpipe_transforms():
    return [StudySelect]


MOVEGUI_HELP = """Open dcm_move as a web page (dcm_movegui).

\b
Serves a form on 127.0.0.1 only, one field per `dcmpipe move` switch, and
prints its address with a random token; only a browser that knows the
token may use it.  Preview shows the planned tree with a box per study;
Run moves the ticked studies with a live progress bar and a Cancel button.
Stop with Ctrl-C or the page's Quit button.

\b
Examples:
  dcmpipe movegui                       open the page in the default browser
  dcmpipe movegui --no-browser --port 8765
                                        for an SSH tunnel: ssh -L 8765:127.0.0.1:8765 host
"""


@click.command("movegui", help=MOVEGUI_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="port on 127.0.0.1; 0 picks a free one")
@click.option("--no-browser", is_flag=True, help="do not open a web browser; just print the address")
@click.option("--command", "command_name", default="move", show_default=True, hidden=True,
              help="the tool command whose form is served")
@click.option("--values", hidden=True, help="JSON object of field values to start with (move --gui passes them)")
def movegui_command(port, no_browser, command_name, values):
    import json

    from ._movegui_server import serve

    ctx = click.get_current_context()
    command = ctx.find_root().command.get_command(ctx, command_name)
    if command is None:
        raise click.UsageError(f"no command {command_name!r}")
    if isinstance(values, str):
        try:
            values = json.loads(values)
        except ValueError:
            raise click.BadParameter("not JSON", param_hint="--values") from None
    serve(command, command_name, port=port, open_browser=not no_browser, values=values or {})


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(movegui_command)

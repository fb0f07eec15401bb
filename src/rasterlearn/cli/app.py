"""The ``rasterlearn`` command line: one command per declared tool, and ``describe``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from rasterlearn.cli.commands import add_tool
from rasterlearn.cli.errors import err_console, out_console, user_errors
from rasterlearn.errors import ParameterError
from rasterlearn.tools.registry import find_tool, tools

GROUPS = {"model": "Inspect, package, edit and export models (.emd / .dlpk)."}
"""Command groups (``rasterlearn model info``) and their help."""


class OneLineErrors(TyperGroup):
    """The root command: a usage error (unknown option, missing argument, bad value) is one
    line on stderr and exit code 2, like every other error of the tools."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as err:  # click's usage errors
            ctx = getattr(err, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = err.format_message() if hasattr(err, "format_message") else str(err)
            err_console.print(
                f"[bold red]error:[/] {escape(message)}{escape(where)}",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(getattr(err, "exit_code", 2))
        except typer.Abort:
            err_console.print("interrupted: nothing was written", highlight=False)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def build_app() -> typer.Typer:
    """The command line: each tool's command built from its declaration."""
    app = typer.Typer(
        name="rasterlearn",
        help="Deep learning on geospatial imagery, interoperable with ArcGIS Image Analyst.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        cls=OneLineErrors,
    )
    groups: dict[str, typer.Typer] = {}
    for tool in tools():
        group, _, name = tool.command.rpartition(" ")
        target = app
        if group:
            if group not in groups:
                groups[group] = typer.Typer(
                    help=GROUPS[group], no_args_is_help=True, pretty_exceptions_enable=False
                )
                app.add_typer(groups[group], name=group)
            target = groups[group]
        add_tool(target, tool, name)
    app.command("describe")(describe_cmd)
    app.command("serve")(serve_cmd)
    app.command("label")(label_cmd)
    app.command("review")(review_cmd)
    return app


@user_errors
def describe_cmd(
    tool: Annotated[str, typer.Argument(help="A tool: its name, command or REST task name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the declaration as JSON.")] = False,
) -> None:
    """Describe a tool's parameters: names, types, defaults, choices and help."""
    declared = find_tool(tool)
    if as_json:
        typer.echo(json.dumps(declared.to_json(), indent=2))
        return
    out_console.print(f"{declared.summary} ({declared.name})", highlight=False)
    out_console.print(
        f"command: rasterlearn {declared.command}; REST task: {declared.rest_name}",
        highlight=False,
    )
    for p in declared.parameters:
        default = "required" if p.required else f"default {p.default!r}"
        choices = f"; one of {', '.join(p.choices)}" if p.choices else ""
        out_console.print(
            f"  {p.name} ({p.type}, {p.role}; {default}{choices}): {p.help}",
            highlight=False,
            soft_wrap=True,
        )


@user_errors
def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: Annotated[
        Path, typer.Option(help="Data directory: jobs, uploads, results, the job store.")
    ] = Path("rasterlearn-data"),
    max_jobs: Annotated[int, typer.Option(help="Jobs running at once (the rest queue).")] = 2,
    cluster: Annotated[
        str | None, typer.Option(help="Tools fan out on a local Dask cluster: local:N.")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Tools fan out on a running Dask cluster: tcp://HOST:PORT.")
    ] = None,
    api_keys: Annotated[
        Path | None,
        typer.Option(
            help="File of SHA-256 hashed API keys, one a line (printf %s KEY | sha256sum)."
        ),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload accepted (MB).")] = 1024.0,
) -> None:
    """Serve every tool as a REST job service (OGC API - Processes and ArcGIS GP tasks)."""
    from rasterlearn.serve.app import check_settings, serve
    from rasterlearn.serve.service import Settings

    if cluster and scheduler:
        raise ParameterError("give --cluster or --scheduler, not both")
    settings = Settings(
        data_dir=data_dir,
        max_jobs=max_jobs,
        cluster=cluster,
        scheduler=scheduler,
        api_keys=api_keys,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
    )
    check_settings(settings, host)
    err_console.print(f"rasterlearn serve: http://{host}:{port}/ (data in {data_dir})")
    serve(settings, host, port)


@user_errors
def label_cmd(
    imagery: Annotated[str, typer.Argument(help="The raster to label: a file or a URL (COG).")],
    samples: Annotated[
        Path | None,
        typer.Option(help="Samples GeoPackage (default: IMAGERY_samples.gpkg beside it)."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on (loopback).")] = 8000,
    data_dir: Annotated[
        Path, typer.Option(help="Data directory of the service: jobs (exports, models).")
    ] = Path("rasterlearn-data"),
) -> None:
    """Label training samples on a raster in the browser: serves the page on loopback and
    prints its URL."""
    from rasterlearn.serve.app import check_settings, serve
    from rasterlearn.serve.local import label_page
    from rasterlearn.serve.service import Settings

    page = label_page(imagery, samples)
    settings = Settings(data_dir=data_dir, files_dir=page.files_dir)
    host = "127.0.0.1"
    check_settings(settings, host)
    typer.echo(page.url(host, port, "label"))
    err_console.print(f"rasterlearn label: serving {page.files_dir} as files/ (Ctrl+C stops)")
    serve(settings, host, port)


@user_errors
def review_cmd(
    imagery: Annotated[str, typer.Argument(help="The imagery: a file or a URL (COG).")],
    results: Annotated[
        list[Path],
        typer.Argument(
            help="Detected or classified objects (.gpkg, reviewed in place) and/or a "
            "classified raster (shown with its colour table)."
        ),
    ],
    port: Annotated[int, typer.Option(help="Port to listen on (loopback).")] = 8000,
    data_dir: Annotated[
        Path, typer.Option(help="Data directory of the service: jobs (accuracy).")
    ] = Path("rasterlearn-data"),
) -> None:
    """Review results in the browser (accept, reject, reclass; accuracy): serves the page on
    loopback and prints its URL."""
    from rasterlearn.serve.app import check_settings, serve
    from rasterlearn.serve.local import review_page
    from rasterlearn.serve.service import Settings

    page = review_page(imagery, results)
    settings = Settings(data_dir=data_dir, files_dir=page.files_dir)
    host = "127.0.0.1"
    check_settings(settings, host)
    typer.echo(page.url(host, port, "review"))
    err_console.print(f"rasterlearn review: serving {page.files_dir} as files/ (Ctrl+C stops)")
    serve(settings, host, port)


app = build_app()


def main() -> None:
    """Entry point of the ``rasterlearn`` script."""
    # Idle OpenMP threads sleep instead of spinning: on a busy machine spinning threads take
    # the cores from the working ones (training ran 3-4x slower on 2 loaded cores). Torch
    # reads it when it loads, which every command does lazily; an explicit setting is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app(prog_name="rasterlearn")


if __name__ == "__main__":
    sys.exit(main())

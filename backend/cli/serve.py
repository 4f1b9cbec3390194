"""`rscovlm serve`: load the model once and serve jobs over HTTP (see backend/server)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from backend.engine.factory import add_engine_options, engine_choice, load_engine
from backend.errors import UserError

TOKEN_ENVIRONMENT = "RSCOVLM_TOKEN"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the model as a local HTTP service (for the QGIS plugin and scripts)",
        description="Load the model once and serve jobs over HTTP; prints the URL and writes it, with the token, "
        "to the server file the plugin reads.",
    )
    add_engine_options(parser.add_argument_group("model"))
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; anything else is reachable from outside)")
    server.add_argument("--port", type=int, default=0, help="port (default 0: a free one, written to the server file)")
    server.add_argument("--token", help=f"bearer token clients must send (default: ${TOKEN_ENVIRONMENT}, else a new random one)")
    server.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="another name clients may use as Host")
    server.add_argument("--result-ttl", type=float, default=3600.0, help="seconds a finished job's result is kept (default 3600)")
    server.add_argument("--max-jobs", type=int, default=1000, help="jobs queued or running at once before 503 (default 1000)")
    server.add_argument("--max-upload-mb", type=int, default=4096, help="largest raster upload in MiB (default 4096)")
    server.add_argument("--server-file", type=Path, help="where to write the URL and token (default: ~/.config/rscovlm/server.json)")
    server.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="warning")
    server.add_argument(
        "--served-model-name",
        help="the model's name on the OpenAI routes (default: the checkpoint folder's name, or the hub id; never a path)",
    )
    server.add_argument(
        "--models-dir", type=Path, help="the models folder the Models list shows and downloads go into (default: $RSCOVLM_MODELS_DIR, "
        "else rscovlm/models in the user's data folder)",
    )
    server.add_argument("--export-openapi", metavar="PATH", help="write the OpenAPI schema to PATH and exit (loads no model)")
    parser.set_defaults(handler=run_serve)


def served_name(choice) -> str:
    """What the OpenAI routes call the model when no name is given: as vLLM names it by what was
    passed, but a folder by its name only, so the server's file layout is not shown to clients."""
    if choice.url:
        return choice.label
    model = Path(choice.model).expanduser()
    name = model.name if model.exists() else str(choice.model)
    if choice.adapter:
        adapter = Path(choice.adapter)
        name += "+" + (adapter.parent.name if adapter.name == "adapter" else adapter.name)
    return name


def export_openapi(path: str) -> int:
    from backend.server.app import openapi_json

    target = Path(path)
    if not target.parent.is_dir():
        raise UserError(f"folder {target.parent} does not exist.", "Create it first or choose another path.")
    fd, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(openapi_json())
    os.replace(staging, target)
    print(f"wrote {target}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    if args.export_openapi:
        return export_openapi(args.export_openapi)
    import logging

    from backend.cli.tasks import resolve_model
    from backend.server.jobs import Scheduler
    from backend.server.security import Limits, is_loopback, remove_server_file, write_server_file
    from backend.server.serving import LocalServer

    if args.result_ttl < 0 or args.max_jobs < 1 or args.max_upload_mb < 1:
        raise UserError("--result-ttl must be >= 0, --max-jobs and --max-upload-mb >= 1.", None)
    logging.basicConfig(level=args.log_level.upper(), format="rscovlm serve: %(levelname)s %(message)s")
    choice = engine_choice(args, lambda: resolve_model(args))
    engine = load_engine(choice)
    scheduler = Scheduler(engine, lambda: load_engine(choice), args.result_ttl, args.max_jobs)
    try:
        server = LocalServer(
            scheduler,
            args.host,
            args.port,
            args.token or os.environ.get(TOKEN_ENVIRONMENT),
            Limits(upload_bytes=args.max_upload_mb * 2**20),
            tuple(args.allow_host),
            args.log_level,
            args.served_model_name or served_name(choice),
            args.models_dir,
        )
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}).", "Choose another --port, or 0 for a free one.") from exc
    if not is_loopback(args.host):
        print(
            f"warning: listening on {args.host}: anyone who can reach this machine and has the token can use the model "
            "and read files it can read. Prefer 127.0.0.1 and an SSH tunnel (ssh -L PORT:127.0.0.1:PORT host).",
            file=sys.stderr,
        )
    server_file = write_server_file(server.url, server.token, engine.model_id, args.server_file)
    print(f"serving {engine.model_id} at {server.url}", flush=True)
    print(f"URL and token in {server_file}", flush=True)
    try:
        server.serve()
    finally:
        remove_server_file(server_file, server.token)
    print(f"stopped; {server.cancelled} unfinished job(s) cancelled", flush=True)
    return 0

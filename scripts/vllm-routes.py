"""Print the HTTP route table of the installed vLLM's API server for a generate model as JSON (run with the
vLLM venv's Python).

The app is vLLM's own ``build_app`` with the ``vllm serve`` parser's defaults and the tasks a text
generation model reports (``("generate",)``): the routes a replica ms4fleet deploys answers, none left out.
ms4fleet's core never imports vLLM: this table is stored in src/ms4fleet/catalog/vllm_routes.json, and
tests/vllm/test_vllm_routes.py checks the stored table against the real app.
Usage: ``"$VENV/bin/python" scripts/vllm-routes.py > src/ms4fleet/catalog/vllm_routes.json``
"""

import json
import logging
import warnings

import vllm
from starlette.routing import Mount, Route
from vllm.entrypoints.launchers.app import build_app
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.entrypoints.serve.middleware.authenticate import GUARDED_PREFIX
from vllm.utils.argparse_utils import FlexibleArgumentParser

TASKS = ("generate",)


def route_table() -> dict[str, object]:
    args = make_arg_parser(FlexibleArgumentParser(prog="vllm serve")).parse_args(["/models/m"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = build_app(args, TASKS, None)
    routes = []
    for route in app.routes:
        if isinstance(route, Mount):
            # A mounted ASGI app (the Prometheus exporter): every method, every path below it.
            routes.append({"path": route.path, "methods": [], "mount": True})
        elif isinstance(route, Route):
            routes.append({"path": route.path, "methods": sorted(route.methods or ()), "mount": False})
        else:
            raise SystemExit(f"unexpected route type {type(route).__name__} at {getattr(route, 'path', '?')}")
    return {
        "vllm_version": vllm.__version__,
        "supported_tasks": list(TASKS),
        "guarded_prefixes": list(GUARDED_PREFIX),
        # In vLLM's order: the first route whose path and method match answers.
        "routes": routes,
    }


def main() -> None:
    logging.disable(logging.CRITICAL)
    table = route_table()
    # One route a line: a diff of two releases reads route by route.
    routes = ",\n".join("  " + json.dumps(route) for route in table.pop("routes"))  # type: ignore[attr-defined]
    head = json.dumps(table)[:-1]
    print(f'{head}, "routes": [\n{routes}\n]}}')


if __name__ == "__main__":
    main()

"""`taskmaster functions …`: inspect, reload, install and remove function packages."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from taskmaster.commands.output import connect, print_table
from taskmaster.errors import ServerUnavailableError

EXIT_PLUGIN_LOAD = 2


def functions_list(args: argparse.Namespace) -> int:
    if not args.local:
        with connect(args) as client:
            try:
                functions = client.functions()
            except ServerUnavailableError as exc:
                print(f"taskmaster: {exc.message}\nshowing this environment instead"
                      " (--local)", file=sys.stderr)
            else:
                return print_functions(args, functions)
    return functions_local(args)


def print_functions(args: argparse.Namespace, functions: list[dict[str, Any]]) -> int:
    if args.json:
        print(json.dumps(functions, indent=2))
        return 0
    print_table(("FUNCTION", "PLUGIN", "VERSION", "QUEUE", "STATE", "WORKERS"), [
        (f["name"], f["plugin"], f["version"], f["queue"], f["state"],
         ", ".join(f"{w['worker']}={w['version'] or '-'}" for w in f["workers"]) or "-")
        for f in functions])
    errors = {(f["plugin"], f["loadError"]) for f in functions if f["loadError"]}
    for plugin, error in sorted(errors):
        print(f"taskmaster: {plugin}: {error}", file=sys.stderr)
    return EXIT_PLUGIN_LOAD if errors else 0


def functions_reload(args: argparse.Namespace) -> int:
    with connect(args) as client:
        result = client.reload()
    return print_reload(args, result)


def print_reload(args: argparse.Namespace, result: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if result["converged"] and not result["rejected"] else 1
    for label in ("loaded", "unloaded", "rejected"):
        for item in result[label]:
            print(f"{label}: {item}")
    for worker in result["workers"]:
        versions = ", ".join(f"{v['plugin']} {v['version']}" for v in worker["loadedVersions"])
        print(f"worker {worker['id']} (pid {worker['pid']}): {versions or 'nothing'}")
    print("converged" if result["converged"] else "NOT converged: some workers run other"
          " versions (see `taskmaster functions list`)")
    return 0 if result["converged"] and not result["rejected"] else 1


def functions_install(args: argparse.Namespace) -> int:
    from taskmaster.registry.install import pip_install

    print(pip_install(args.requirements, target=args.target).splitlines()[-1])
    return reload_after_change(args)


def functions_remove(args: argparse.Namespace) -> int:
    from taskmaster.registry.install import pip_remove

    print(pip_remove(args.name, target=args.target).splitlines()[-1])
    return reload_after_change(args)


def reload_after_change(args: argparse.Namespace) -> int:
    with connect(args) as client:
        try:
            result = client.reload()
        except ServerUnavailableError:
            print("no TaskMaster server answered; running hosts pick the change up when"
                  " they next scan (or on SIGHUP)", file=sys.stderr)
            return 0
    return print_reload(args, result)


def functions_local(args: argparse.Namespace) -> int:
    from taskmaster.registry import load_catalog

    catalog = load_catalog()
    if args.json:
        print(json.dumps([
            {"name": e.function.name, "plugin": e.plugin, "version": e.version,
             "queue": e.function.queue, "inputSchema": e.function.input_schema()}
            for e in catalog.entries()], indent=2))
    else:
        rows = [(e.function.name, e.plugin, e.version, e.function.queue)
                for e in catalog.entries()]
        print_table(("FUNCTION", "PLUGIN", "VERSION", "QUEUE"), rows)
    failed = [p for p in catalog.plugins if not p.ok]
    for plugin in failed:
        print(f"taskmaster: plugin {plugin.name} {plugin.version} not loaded: {plugin.error}",
              file=sys.stderr)
    return EXIT_PLUGIN_LOAD if failed else 0

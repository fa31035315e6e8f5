"""Output and plumbing shared by the command-line commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from taskmaster.settings import Settings, load_settings

if TYPE_CHECKING:
    from taskmaster.client import Client


def connect(args: argparse.Namespace) -> Client:
    from taskmaster.client import Client

    return Client(server_url(args))


def server_url(args: argparse.Namespace) -> str:
    return args.url or settings(args).server_url


def settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(config_file=args.config, overrides=overrides)


def print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_rows(args: argparse.Namespace, raw: Any, header: tuple[str, ...],
                rows: Sequence[tuple[str, ...]]) -> None:
    if args.json:
        print(json.dumps(raw, indent=2))
    else:
        print_table(header, rows)


def progress_bar(args: argparse.Namespace) -> Callable[[Any], None]:
    """Draw the job's progress on stderr while it runs (only on a terminal)."""
    def draw(job: Any) -> None:
        if args.json or not sys.stderr.isatty():
            return
        fraction = job.progress or 0.0
        filled = int(fraction * 30)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%}"
                         f" {job.status:<9} attempt {job.attempts}/{job.max_attempts}")
        sys.stderr.flush()

    return draw


def end_progress_bar(args: argparse.Namespace) -> None:
    if not args.json and sys.stderr.isatty():
        sys.stderr.write("\n")


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"

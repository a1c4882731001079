"""Command line: argument parsing only; the work lives in the library."""

from __future__ import annotations

import argparse


def _cmd_info(args: argparse.Namespace) -> int:
    from ptqx.ops.info import describe

    print(describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptqx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="which kernel serves each op, and versions")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)

"""The boss-sidecar command (the launcher lands with the launcher issue)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="boss-sidecar", description="Run and check zenoh sidecars.")
    parser.parse_args(argv)
    parser.print_help()
    return 0

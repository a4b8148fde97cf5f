"""``python -m controllers serve|controller|keys ...`` (the same as ``gronvag serve|controller|keys``)."""

from __future__ import annotations

import sys

from controllers.cli import controller_main, keys_main, serve_main

COMMANDS = {"serve": serve_main, "controller": controller_main, "keys": keys_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write(f"usage: python -m controllers {{{'|'.join(COMMANDS)}}} ...\n")
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())

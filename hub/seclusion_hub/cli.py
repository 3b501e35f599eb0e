"""`seclusion-hub`: serve, token create, migrate, check-config."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .auth import ROLES, create_token
from .config import HubSettings, load_sites
from .core.clock import SystemClock
from .errors import ConfigError
from .runtime import Hub
from .store import Store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seclusion-hub", description="The seclusion monitoring hub.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the hub (settings from SECLUSION_* variables or .env)")
    sub.add_parser("migrate", help="bring the database schema up to date")
    sub.add_parser("check-config", help="read the site files and profiles and report problems")
    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="print a new bearer token alone on stdout")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--site", action="append", default=[], help="limit to this site (repeatable)")
    create.add_argument("--dsl", action="store_true", help="a designated safeguarding lead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = HubSettings()
        if args.command == "serve":
            Hub.build(settings).serve()
        elif args.command == "migrate":
            Store.open(settings.database_url).close()
        elif args.command == "check-config":
            sites = load_sites(settings.site_paths())
            for site in sites:
                rooms = ", ".join(r.id for r in site.spec.rooms)
                sys.stdout.write(f"{site.path}: site {site.id}, rooms {rooms}: ok\n")
        elif args.command == "token":
            store = Store.open(settings.database_url)
            try:
                token = create_token(store, args.name, args.role, args.site, args.dsl, SystemClock().now())
            finally:
                store.close()
            sys.stdout.write(token + "\n")
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

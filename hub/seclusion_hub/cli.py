"""`seclusion-hub`: serve, token create/list/revoke, migrate, check-config."""

from __future__ import annotations

import argparse
import logging
import sys

import alembic.util.exc
from sqlalchemy.exc import DBAPIError

from seclusion_contract import format_ts

from . import __version__
from .auth import ROLES, create_token
from .config import load_settings, load_sites
from .core.alerts import TIERS
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
    token_sub.add_parser("list", help="every token: id, name, role, sites, made, revoked (never the token)")
    revoke = token_sub.add_parser("revoke", help="revoke a token now (a lost phone, someone who left)")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, help="the token's id (from `token list`)")
    which.add_argument("--name", help="every live token of this name")
    return parser


def _token_command(args: argparse.Namespace, store: Store, known: list[str] | None) -> int:
    now = SystemClock().now()
    action = str(args.token_command)
    if action == "create":
        unknown = [s for s in args.site if known is not None and s not in known]
        if unknown:
            # A misspelt site gives a token that sees nothing.
            sys.stderr.write(
                f"error: --site {unknown[0]}: no site file of SECLUSION_SITE_FILES declares it "
                f"(sites: {', '.join(known or []) or 'none'})\n"
            )
            return 2
        token = create_token(store, args.name, args.role, args.site, args.dsl, now)
        sys.stdout.write(token + "\n")
    elif action == "list":
        for row in store.tokens():
            sites = ",".join(row.sites) if row.sites else "all sites"
            state = f"revoked {format_ts(row.revoked_at)}" if row.revoked_at is not None else "live"
            dsl = " dsl" if row.dsl else ""
            made = format_ts(row.created_at)
            sys.stdout.write(f"{row.id}\t{row.name}\t{row.role}{dsl}\t{sites}\tmade {made}\t{state}\n")
    else:
        gone = store.revoke_tokens(token_id=args.id, name=args.name, now=now)
        if not gone:
            sys.stderr.write("error: no live token matches; `seclusion-hub token list` shows them\n")
            return 2
        for row in gone:
            sys.stdout.write(f"revoked token {row.id} ({row.name}, {row.role})\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        if args.command == "serve":
            Hub.build(settings).serve()
        elif args.command == "migrate":
            Store.open(settings.database_url).close()
        elif args.command == "check-config":
            sites = load_sites(settings.site_paths())
            for site in sites:
                rooms = ", ".join(r.id for r in site.spec.rooms)
                sys.stdout.write(f"{site.path}: site {site.id}, rooms {rooms}: ok\n")
                have = site.tiers_with_recipients()
                if not have:
                    sys.stdout.write(
                        f"{site.path}: warning: site {site.id} has no recipients: every alert reaches only "
                        "the live board and the room's indicator\n"
                    )
                elif empty := [t for t in TIERS if t not in have]:
                    sys.stdout.write(
                        f"{site.path}: note: site {site.id} has nobody on the tiers {', '.join(empty)}\n"
                    )
        elif args.command == "token":
            # With site files set, a token's sites are checked against them (without, on trust).
            known = [site.id for site in load_sites(settings.site_paths())] if settings.site_files else None
            store = Store.open(settings.database_url)
            try:
                return _token_command(args, store, known)
            finally:
                store.close()
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2
    except DBAPIError as exc:
        # The database's driver: the server is not there, or refuses the user (never the password).
        first = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        sys.stderr.write(f"configuration error: SECLUSION_DATABASE_URL: cannot use the database: {first}\n")
        return 2
    except alembic.util.exc.CommandError as exc:
        # A schema this hub does not know: written by a newer hub (an upgrade rolled back, a newer
        # backup restored onto this one). Never a traceback, nor a restart loop under Docker.
        sys.stderr.write(
            "configuration error: SECLUSION_DATABASE_URL: the database's schema is not one this hub knows "
            f"({exc}): was it written by a newer version of the hub? Run that version, or restore a "
            "backup taken with this one (docs/operations.md)\n"
        )
        return 2
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

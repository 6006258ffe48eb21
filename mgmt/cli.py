"""The `cliproxy` console command.

Subcommands:
  serve            run the proxy (what ./run.sh does)
  keys             list, add or remove proxy keys
  management-key   print the management key for its owner
  login            log in an OAuth account (claude, codex, gemini)
  usage            today's and this month's usage per key, model and account
  setup            print client settings for Claude Code, Codex CLI and Gemini CLI
"""

import argparse
import logging
import sys
from pathlib import Path

from config import ConfigError, ConfigFile, resolve_config_path
from config.file import generate_proxy_key
from mgmt.apikeys import is_valid_proxy_key
from mgmt.yamledit import replace_sequence

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    if args.handler is not cmd_serve:
        # `serve` logs through mitmproxy's terminal log; a second handler would print twice.
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"cliproxy: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cliproxy", description="Local proxy for AI coding tools.")
    parser.add_argument(
        "--config",
        default="",
        help="config.yaml to use (default: $CLIPROXY_CONFIG, else ~/.cli-proxy-api/config.yaml)",
    )
    # --config is accepted before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", parents=[common], help="run the proxy")
    serve.set_defaults(handler=cmd_serve)

    keys = commands.add_parser("keys", parents=[common], help="list, add or remove proxy keys")
    keys.add_argument("action", choices=["list", "add", "remove"], nargs="?", default="list")
    keys.add_argument("value", nargs="?", help="the key to add or remove (add: generated when omitted)")
    keys.set_defaults(handler=cmd_keys)

    management_key = commands.add_parser("management-key", parents=[common], help="print the management key")
    management_key.add_argument(
        "--rotate", action="store_true", help="replace the generated key with a new one and print it"
    )
    management_key.set_defaults(handler=cmd_management_key)

    login = commands.add_parser("login", parents=[common], help="log in an OAuth account")
    login.add_argument("provider", choices=["claude", "codex", "gemini"])
    login.add_argument("--no-browser", action="store_true", help="only print the URL")
    login.add_argument("--project-id", default="", help="Gemini: the Google Cloud project to use")
    login.set_defaults(handler=cmd_login)

    usage = commands.add_parser("usage", parents=[common], help="usage per key, model and account")
    usage.set_defaults(handler=cmd_usage)

    setup = commands.add_parser("setup", parents=[common], help="print client settings")
    setup.add_argument("client", choices=["claude-code", "codex", "gemini-cli", "all"], nargs="?", default="all")
    setup.set_defaults(handler=cmd_setup)
    return parser


def _config_file(args: argparse.Namespace) -> ConfigFile:
    return ConfigFile(resolve_config_path(args.config))


def cmd_serve(args: argparse.Namespace) -> int:
    from addons.launcher import main as serve_main

    return serve_main(args.config)


def cmd_keys(args: argparse.Namespace) -> int:
    config_file = _config_file(args)
    config_file.ensure_exists()
    if args.action == "list":
        for key in config_file.load().api_keys:
            print(key)
        return 0

    if args.action == "add":
        key = args.value or generate_proxy_key()
        if not is_valid_proxy_key(key):
            print("cliproxy: invalid key: use 1 to 512 characters without spaces", file=sys.stderr)
            return 2
        if is_management_key(config_file, key):
            print("cliproxy: that is the management key; proxy keys must differ from it", file=sys.stderr)
            return 2

        def add(document) -> None:
            keys = list(document.get("api-keys") or [])
            if key not in keys:
                replace_sequence(document, "api-keys", [*keys, key])

        config_file.update(add)
        print(key)
        return 0

    if not args.value:
        print("cliproxy: keys remove needs the key to remove", file=sys.stderr)
        return 2

    removed = []

    def remove(document) -> None:
        keys = list(document.get("api-keys") or [])
        kept = [key for key in keys if key != args.value]
        removed.extend(key for key in keys if key == args.value)
        if removed:
            replace_sequence(document, "api-keys", kept)

    config_file.update(remove)
    if not removed:
        print("cliproxy: that key is not configured", file=sys.stderr)
        return 1
    return 0


def is_management_key(config_file: ConfigFile, candidate: str) -> bool:
    """Whether `candidate` opens the management API (it must then not be a proxy key)."""
    import os

    from mgmt.keys import ENV_PASSWORD, GeneratedKeyStore, ManagementKeys

    config = config_file.load()
    keys = ManagementKeys(
        lambda: config.remote_management.secret_key,
        os.environ.get(ENV_PASSWORD),
        GeneratedKeyStore(config_file.path.parent).load(),
    )
    return keys.verify(candidate)


def cmd_management_key(args: argparse.Namespace) -> int:
    from mgmt.keys import GeneratedKeyStore, read_management_key

    path = resolve_config_path(args.config)
    if args.rotate:
        print(GeneratedKeyStore(path.parent).rotate())
        print("restart cliproxy so that the running proxy accepts the new key", file=sys.stderr)
        return 0
    print(read_management_key(path))
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    from oauth.terminal import login

    return login(_config_file(args), args.provider, open_browser=not args.no_browser, project_id=args.project_id)


def cmd_usage(args: argparse.Namespace) -> int:
    from store.report import print_usage_report

    config = _config_file(args).load()
    return print_usage_report(config)


def cmd_setup(args: argparse.Namespace) -> int:
    config_file = _config_file(args)
    config_file.ensure_exists()
    config = config_file.load()
    print(client_setup(config.host, config.port, config.api_keys[0] if config.api_keys else "<proxy key>", args.client))
    return 0


def client_setup(host: str, port: int, key: str, client: str = "all") -> str:
    """Return copy-paste settings for the chosen client(s)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    base = f"http://{host}:{port}"
    parts = {
        "claude-code": (
            "# Claude Code\n"
            f"export ANTHROPIC_BASE_URL={base}\n"
            f"export ANTHROPIC_API_KEY={key}\n"
        ),
        "codex": (
            "# Codex CLI: add to ~/.codex/config.toml\n"
            'model_provider = "cliproxy"\n'
            'model = "gpt-5-codex"\n'
            "[model_providers.cliproxy]\n"
            'name = "cliproxy"\n'
            f'base_url = "{base}/v1"\n'
            'env_key = "CLIPROXY_API_KEY"\n'
            'wire_api = "responses"\n'
            f"# and: export CLIPROXY_API_KEY={key}\n"
        ),
        "gemini-cli": (
            "# Gemini CLI (also set security.auth.selectedType to \"gemini-api-key\" in ~/.gemini/settings.json)\n"
            f"export GOOGLE_GEMINI_BASE_URL={base}\n"
            f"export GEMINI_API_KEY={key}\n"
        ),
    }
    if client == "all":
        return "\n".join(parts.values())
    return parts[client]


if __name__ == "__main__":
    sys.exit(main())

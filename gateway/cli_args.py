"""Arguments several ``gateway`` subcommands share: the policy file, given either way."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["DEFAULT_POLICY", "PolicyArgParser", "add_policy_argument", "resolve_policy"]

# The default policy ships inside the package, so `gateway serve` finds the same file from any
# working directory (a relative default named whatever policies/default.yaml the cwd held, or
# nothing). In a checkout gateway/policies/default.yaml is a link to policies/default.yaml, the
# copy the docs and deploy files name; a wheel holds the file itself.
DEFAULT_POLICY = str(Path(__file__).resolve().parent / "policies" / "default.yaml")


class PolicyArgParser(argparse.ArgumentParser):
    """An ArgumentParser whose parse sets ``args.policy`` from either spelling, so every caller
    of ``parse_args`` (the CLI, tests, deploy checks) sees one attribute."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        if hasattr(ns, "policy_file") and not hasattr(ns, "policy"):
            resolve_policy(self, ns)
        return ns, rest


def add_policy_argument(p: argparse.ArgumentParser, default: str | None = DEFAULT_POLICY) -> None:
    """``POLICY`` positionally or ``--policy POLICY`` (the same thing, either spelling)."""
    shown = ""
    if default == DEFAULT_POLICY:
        shown = f" (default: the packaged policies/default.yaml, {default})"
    elif default is not None:
        shown = f" (default: {default})"
    p.add_argument("policy_file", nargs="?", metavar="POLICY", help="policy YAML" + shown)
    p.add_argument(
        "--policy", dest="policy_option", metavar="POLICY", help="the same, as an option"
    )
    p.set_defaults(policy_default=default)


def resolve_policy(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set ``args.policy`` from either spelling; two different files are an error."""
    pos, opt = args.policy_file, args.policy_option
    if pos is not None and opt is not None and pos != opt:
        parser.error(f"two policy files given: {pos} and --policy {opt}")
    args.policy = pos or opt or args.policy_default
    if args.policy is None:
        parser.error("a policy file is required (POLICY or --policy POLICY)")

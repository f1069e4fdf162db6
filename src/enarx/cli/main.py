"""``enarx``: the command-line entry point.

Subcommands load lazily so ``enarx run`` imports no steward, registry or crypto code.
Every ``EnarxError`` becomes ``error: …`` plus ``hint: …`` on stderr and its exit code;
never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from enarx import __version__

__all__ = ["SUBCOMMANDS", "LazyGroup", "cli", "main"]

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("enarx.cli.run:run", "Run a WebAssembly module in a Keep"),
    "config": ("enarx.cli.config_cmd:config", "Work with Enarx.toml"),
    "deploy": ("enarx.cli.deploy_cmd:deploy", "Deploy a package into an attested Keep"),
    "platform": ("enarx.cli.platform_cmd:platform", "Inspect this host's Keep backends"),
    "attest": ("enarx.cli.attest:attest", "Produce and verify attestation evidence"),
    "identity": ("enarx.cli.identity_cmd:identity",
                 "Print the workload identity a Keep attests for a module or package"),
    "verify-keep": ("enarx.cli.verify_keep_cmd:verify_keep",
                    "Verify a running Keep's certificate and evidence"),
    "key": ("enarx.cli.key_cmd:key", "Make package signing keys"),
    "keep": ("enarx.cli.keep_cmd:keep", "Build and measure the VM Keep image"),
    "dir": ("enarx.cli.dir_cmd:dir_group",
            "Encrypt, decrypt and make keys for encrypted data directories"),
    "registry": ("enarx.cli.registry_cmd:registry", "Run the package registry"),
    "package": ("enarx.cli.package_cmd:package", "Publish, inspect and fetch packages"),
    "user": ("enarx.cli.user_cmd:user", "Register users of a package registry"),
    "repo": ("enarx.cli.repo_cmd:repo", "Register repositories of a package registry"),
    "steward": ("enarx.cli.steward_cmd:steward",
                "Run the attestation service, CA and key broker"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, _, attr = entry[0].partition(":")
        try:
            command: click.Command = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table, so `enarx --help` imports no subcommand.
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][1]) for name in sorted(SUBCOMMANDS)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="enarx")
def cli() -> None:
    """Run WebAssembly workloads in attested Trusted Execution Environments (Keeps).

    \b
    Quick start:
      enarx run app.wasm                  run on the best available backend
      enarx run --backend nil app.wasm    run with no TEE (not confidential)
      enarx config init                   write a commented Enarx.toml
      enarx platform info                 what this host supports, with fix hints
    """


def main(argv: list[str] | None = None) -> Any:
    from enarx.cli.output import run_guarded

    return run_guarded(cli, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

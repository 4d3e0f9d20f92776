"""The ``lora-search`` command line: a table of commands, each in its own module.

Only the chosen command's module is imported, and command modules import heavy
libraries (torch, transformers, optuna) inside ``run``, so ``lora-search --help``
answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn, Sequence

from ._version import installed_version

# name -> (module, one-line help). Each module defines ``configure(parser)`` and
# ``run(args) -> int``, and may define ``DESCRIPTION`` (shown by ``NAME --help``).
COMMANDS: dict[str, tuple[str, str]] = {
    "spaces": ("lora_search._cmd_spaces", "list the scenario search spaces, show one resolved, or suggest one"),
    "check": ("lora_search._cmd_check", "review a training config against the guide's common mistakes"),
    "run": ("lora_search._cmd_run", "search a scenario's space with brief LoRA trainings (resumable)"),
    "studies": ("lora_search._cmd_studies", "list the studies in a storage with trial counts and best values"),
    "show": ("lora_search._cmd_show", "show a study's best trials next to its baseline"),
    "dashboard": ("lora_search._cmd_dashboard", "serve optuna-dashboard on the studies' storage"),
    "report": ("lora_search._cmd_report", "write a study's plots into one self-contained HTML file"),
    "export": ("lora_search._cmd_export", "save a study's best trial as a named preset"),
    "presets": ("lora_search._cmd_presets", "list built-in and exported presets, or show one as code"),
    "train": ("lora_search._cmd_train", "train for real with a preset and save the adapter"),
}

EPILOG = """\
a typical session:
  lora-search spaces suggest --gpu-memory 4GB        which scenario fits my situation?
  lora-search run --space memory-constrained --trials 30
  lora-search dashboard                              watch the study in optuna-dashboard
  lora-search export <study> --name my-preset        keep the winner as a named preset
  lora-search train --preset my-preset --output out/ train for real with it

Run 'lora-search COMMAND --help' for the options of each command.
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to configure its options."""
    parser = _Parser(
        prog="lora-search",
        description="Search LoRA/PEFT fine-tuning settings with Optuna, starting from the guide's scenarios.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lora-search {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=getattr(module, "DESCRIPTION", help_text),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
        sub.set_defaults(handler=module.run)
    return parser


def _requested_command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def _refuse_unrecognized(parser: argparse.ArgumentParser, command: str | None, unrecognized: list[str]) -> NoReturn:
    """The error of the command whose options were mistyped (its --help is the one to read),
    with the nearest option name for each mistyped one."""
    import difflib

    if command is not None:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = subparsers.choices[command]
    options = [option for action in parser._actions for option in action.option_strings]
    guesses = [guess for token in unrecognized if token.startswith("--")
               for guess in difflib.get_close_matches(token.split("=", 1)[0], options, n=1)]
    hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
    parser.error(f"unrecognized arguments: {' '.join(unrecognized)}{hint}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_requested_command(argv))
    args, unrecognized = parser.parse_known_args(argv)
    if unrecognized:
        _refuse_unrecognized(parser, args.command, unrecognized)
    if args.command is None:
        parser.print_help()
        return 2
    from .objectives import distributed_launch
    from .spaces import LoraSearchError

    launch = distributed_launch()
    # each process of a distributed launch reports its own errors: say which
    prog = f"lora-search {args.command}" + (f" (rank {launch.rank})" if launch is not None and launch.rank else "")
    if launch is not None and args.command != "train":
        print(f"{prog}: error: only 'train' runs under torchrun or accelerate launch (WORLD_SIZE={launch.world_size}): "
              f"start 'lora-search {args.command}' plainly (a search takes one trial per GPU with 'run --workers N')",
              file=sys.stderr)
        return 2
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except LoraSearchError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:  # a bug, not bad input: one line unless asked for the traceback
        if os.environ.get("LORA_SEARCH_DEBUG"):
            raise
        full = _full_disk(error, args)
        if full is not None:
            print(f"{prog}: error: {full}", file=sys.stderr)
            return 1
        print(
            f"{prog}: internal error: {type(error).__name__}: {error} "
            "(set LORA_SEARCH_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


# Less than this free on a folder a command wrote to means its disk filled up.
FULL_DISK_BYTES = 1 << 20


def _full_disk(error: BaseException, args: argparse.Namespace) -> str | None:
    """What to say when ``error`` came from a full disk, else None. Storages report it in their
    own words (SQLAlchemy's "e.g. exceeding max length", a journal's later "Should not
    reach."), so besides an ENOSPC anywhere in the chain, the folders the command writes to
    (the storage's, --output's) are looked at."""
    import errno
    import shutil
    from pathlib import Path

    from .spaces import LoraSearchError, first_line

    cause: BaseException | None = error
    while cause is not None:
        if (isinstance(cause, OSError) and cause.errno == errno.ENOSPC) or "disk is full" in str(cause):
            return "the disk is full; free some space and run the same command again (what was stored is kept)"
        cause = cause.__cause__ or cause.__context__
    places = []
    if hasattr(args, "storage"):
        from ._storage import resolve_storage_spec

        try:
            spec = resolve_storage_spec(args.storage)
        except LoraSearchError:
            spec = None
        if spec is not None and spec.path is not None:
            places.append(spec.path.expanduser().resolve().parent)
    if getattr(args, "output", None):
        places.append(Path(args.output).expanduser().resolve().parent)
    for place in places:
        while not place.exists() and place != place.parent:
            place = place.parent
        try:
            free = shutil.disk_usage(place).free
        except OSError:
            continue
        if free < FULL_DISK_BYTES:
            return (f"the disk holding {str(place)!r} is full ({free // 1024:,} KiB free; the error: {type(error).__name__}: "
                    f"{first_line(error)}); free some space and run the same command again (what was stored is kept)")
    return None


if __name__ == "__main__":
    sys.exit(main())

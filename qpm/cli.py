"""The ``qpm`` command line.

Each sub-command lives in its own module under :mod:`qpm.commands` and exposes
``add_parser(subparsers)`` and ``run(args) -> int``; modules are imported lazily, and none of
them imports numpy, torch, Pyomo or a solver at module level, so ``qpm --help`` starts in a
fraction of a second (``benchmarks/startup.py`` prints the figure).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from qpm.errors import QPMError

# sub-command name -> module implementing it
COMMANDS: dict[str, str] = {
    "train": "qpm.commands.train",
    "solve": "qpm.commands.solve",
    "compare": "qpm.commands.compare",
    "bound": "qpm.commands.bound",
    "similarities": "qpm.commands.similarities",
    "evaluate": "qpm.commands.evaluate",
    "explain": "qpm.commands.explain",
    "predict": "qpm.commands.predict",
    "calibrate": "qpm.commands.calibrate",
    "demo": "qpm.commands.demo",
    "import-reference": "qpm.commands.import_reference",
}


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, unless it is None/False or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)".strip()


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's promise: a usage mistake is ONE line and exit code 2 (argparse
    itself prints the whole usage block first). Sub-command parsers inherit the class."""

    def error(self, message: str) -> None:
        from qpm.errors import QPMError

        text = str(QPMError(message))  # one printable line whatever the argument held
        self.exit(2, f"{self.prog}: error: {text}. See `{self.prog} --help`.\n")


def common_options(prefix: str = "") -> argparse.ArgumentParser:
    """-q/-v/--progress, shared by every sub-command (a parent parser) and taken before the
    sub-command as well (``qpm -q train``). Before it they go to ``top_*`` names: argparse
    would otherwise overwrite them with the sub-command's defaults; :func:`_messages` adds
    both sides up."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("messages")
    g.add_argument("-q", "--quiet", action="store_true", dest=f"{prefix}quiet",
                   help="only warnings and errors on stderr")
    g.add_argument("-v", "--verbose", action="count", default=0, dest=f"{prefix}verbose",
                   help="more detail on stderr (-vv: even more)")
    g.add_argument("--progress", action="store_true", dest=f"{prefix}progress",
                   help="progress bars even when stderr is not a terminal "
                   "(default: bars only on a terminal; TQDM_DISABLE=1 turns them off)")
    return p


def _messages(args: argparse.Namespace) -> tuple[int, bool | None]:
    """(verbosity, progress) from the options on both sides of the sub-command."""
    quiet = args.quiet or args.top_quiet
    verbose = args.verbose + args.top_verbose
    return (-1 if quiet else verbose), (True if args.progress or args.top_progress else None)


def _version() -> str:
    from qpm import __version__

    return f"qpm {__version__}"


def _build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, dict]:
    parser = Parser(
        prog="qpm", description="Globally interpretable image classification (QPM).",
        formatter_class=HelpFormatter, parents=[common_options("top_")],
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parent = common_options()
    wanted = next((a for a in argv if not a.startswith("-")), None)
    modules = {}
    for name, module_name in COMMANDS.items():
        # Import only the module the user asked for (all of them for --help).
        if wanted is not None and wanted != name and wanted in COMMANDS:
            sub.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        module.add_parser(_Subparsers(sub, parent))
        modules[name] = module
    return parser, modules


class _Subparsers:
    """Wraps argparse's sub-parser action so every command gets the common options and the
    defaults-showing help formatter without each module repeating them."""

    def __init__(self, sub, parent: argparse.ArgumentParser) -> None:
        self._sub, self._parent = sub, parent

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs["parents"] = [*kwargs.get("parents", []), self._parent]
        return self._sub.add_parser(name, **kwargs)


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler's time-out): handled like Ctrl-C, so ``finally``
    blocks run and solver processes started by ``qpm compare`` are stopped, not orphaned."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, modules = _build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from qpm import logs

    verbosity, progress = _messages(args)
    args.quiet, args.verbose, args.progress = verbosity < 0, max(verbosity, 0), bool(progress)
    logs.configure(verbosity, progress)
    previous = _install(signal.SIGTERM, _on_sigterm)
    # `ulimit -f`: a write past the limit must fail (EFBIG, one line), not kill the process.
    xfsz = _install(signal.SIGXFSZ, signal.SIG_IGN) if hasattr(signal, "SIGXFSZ") else None
    try:
        code = int(modules[args.command].run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler below
        return code
    except QPMError as exc:
        print(f"qpm {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `qpm solve ... | head`: the reader left; end quietly
        _quiet_stdout()
        return 0
    except (OSError, MemoryError, ImportError) as exc:  # the machine's limits: one line
        from qpm.errors import environment_error

        known = environment_error(exc)
        if known is None:
            raise
        print(f"qpm {args.command}: error: {known}", file=sys.stderr)
        return known.exit_code
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"qpm {args.command}: {how}; finished artifacts are kept.", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        _install(signal.SIGTERM, previous)
        if xfsz is not None:
            _install(signal.SIGXFSZ, xfsz)


def _install(signum: int, handler):
    """Set a signal handler where Python allows it (the main thread); the previous one."""
    if handler is None:
        return None
    try:
        return signal.signal(signum, handler)
    except ValueError:  # not the main thread (main() called from a worker thread)
        return None


if __name__ == "__main__":
    sys.exit(main())

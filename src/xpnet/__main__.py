"""``python -m xpnet`` and the ``xpnet`` console script.

The command-line module and the array libraries are imported inside
:func:`console`, after the signal handlers are in place, so Ctrl-C or SIGTERM
while they load ends with one line instead of a traceback.
"""

import signal
import sys


def console() -> int:
    from .interrupts import SIGNALS, Terminated, install
    from .stdio import guard_standard_streams

    guard_standard_streams()  # before any message: stderr may be closed
    install()
    try:
        from .cli import main
    except KeyboardInterrupt:
        print(f"{_end_echo()}xpnet: interrupted while starting", file=sys.stderr)
        return 1
    except Terminated as exc:
        print(f"{_end_echo()}xpnet: {exc} while starting", file=sys.stderr)
        return exc.exit_code
    try:
        return main()
    finally:
        # The run has ended and said so: a second Ctrl-C while the
        # interpreter shuts down must not turn it into a death by SIGINT.
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _end_echo() -> str:
    """A newline after the terminal's ``^C`` echo, else nothing: in a log or
    a pipe the message stays one line (as :func:`xpnet.cli.common.end_bar_line`)."""
    try:
        return "\n" if sys.stderr.isatty() else ""
    except (AttributeError, ValueError):  # stderr closed or replaced
        return ""


if __name__ == "__main__":
    sys.exit(console())

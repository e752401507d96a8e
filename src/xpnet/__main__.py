"""``python -m xpnet`` and the ``xpnet`` console script.

The command-line module and the array libraries are imported inside
:func:`console`, after the signal handlers are in place, so Ctrl-C or SIGTERM
while they load ends with one line instead of a traceback.
"""

import sys


def console() -> int:
    from .interrupts import Terminated, install

    install()
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("\nxpnet: interrupted while starting", file=sys.stderr)
        return 1
    except Terminated:
        print("\nxpnet: terminated (SIGTERM) while starting", file=sys.stderr)
        return Terminated.exit_code
    return main()


if __name__ == "__main__":
    sys.exit(console())

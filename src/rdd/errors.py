"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input (config, data, files) rather than a bug.

    The command-line entry points print ``error: <message>`` on one line and exit with
    status 2 instead of showing a traceback. Messages should say what is wrong and what to do.
    """


class NonFiniteError(UserError):
    """A loss, the images or the learned step size became NaN/Inf; the run stops.

    The learner has already put the last finite images (and step size) back, so the caller
    can keep them.
    """


class Interrupted(Exception):
    """Ctrl-C (SIGINT), raised by the handler ``rdd.cli.run_cli`` installs.

    Not a KeyboardInterrupt: Lightning turns that into ``sys.exit(1)`` inside ``Trainer.fit``,
    with its own message and no chance for us to say what was kept. The message, when set,
    says what the run kept and how to continue; the CLI prints it on one line (exit 130).
    """

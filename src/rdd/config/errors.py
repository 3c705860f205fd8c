"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations

import signal


class UserError(ValueError):
    """A problem with the user's input (config, data, files) rather than a bug.

    The command-line entry points print ``error: <message>`` on one line and exit with
    status 2 instead of showing a traceback. Messages should say what is wrong and what to do.
    """


class ConfigError(UserError):
    """A composed config refused by its checks (rdd.config.checks): every rank of a
    torchrun/srun launch finds it alike, so rank 0 alone reports it."""


class NonFiniteError(UserError):
    """A loss, the images or the learned step size became NaN/Inf; the run stops.

    The learner has already put the last finite images (and step size) back, so the caller
    can keep them.
    """


class Interrupted(Exception):
    """Ctrl-C (SIGINT), or SIGTERM / SIGUSR1 (preemption), raised by the handlers
    ``rdd.config.cli.run_cli`` installs (a distillation defers it to a safe point: rdd.checkpoint.preemption).

    Not a KeyboardInterrupt: Lightning turns that into ``sys.exit(1)`` inside ``Trainer.fit``,
    with its own message and no chance for us to say what was kept. The message, when set,
    says what the run kept and how to continue; the CLI prints it on one line and exits with
    128 + the signal's number, as a shell reports a process killed by it (SIGINT: 130,
    SIGTERM: 143, SIGUSR1: 138).
    """

    def __init__(self, message: str = "", signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = int(signum)

    def __reduce__(self):  # keeps the signal when it travels between processes (DDP)
        return type(self), (str(self), self.signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    @property
    def label(self) -> str:
        """How the one line starts: ``interrupted`` (Ctrl-C) or ``stopped by SIGTERM``."""
        if self.signum == signal.SIGINT:
            return "interrupted"
        return f"stopped by {signal.Signals(self.signum).name}"

    def again(self, message: str) -> Interrupted:
        """The same interruption with a message that says what was kept."""
        return Interrupted(message, self.signum)

"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM (a scheduler's notice).

The first signal asks the trainer to stop: it finishes the step it is in, writes its
training state and returns. A second signal stops the process at once, by the signal's own
default action; the files on disk are then the previous checkpoint, which the atomic writes
keep whole. Under ``torchrun`` a terminal's Ctrl-C reaches every process and ``torchrun``
passes it on once more, so signals within :data:`SAME_REQUEST_S` of the first count as the
same request.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger("tessera")

#: seconds during which repeated signals are one request
SAME_REQUEST_S = 1.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    """What :func:`stop_on_signals` received: the first signal (``None`` if none came)."""

    signum: int | None = None
    at: float = 0.0

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: ``128 + signum``."""
        return 128 + self.signum if self.signum else 0


@contextmanager
def stop_on_signals(trainer, announce: bool = True) -> Iterator[StopRequest]:
    """While the block runs, SIGINT and SIGTERM set ``trainer.stop_requested`` (the loop
    checks it after every step); a second signal ends the process at once. Outside the
    main thread, where Python cannot take signals, this does nothing."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, frame):
        now = time.monotonic()
        if request.signum is None:
            request.signum, request.at = signum, now
            trainer.stop_requested = True
            if announce:
                log.warning("%s: finishing this step, then saving a checkpoint; send it again to stop at once "
                            "(without saving)", signal.Signals(signum).name)
        elif now - request.at > SAME_REQUEST_S:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handle)
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


"""Stop training cleanly on SIGTERM (a scheduler's preemption notice) or SIGINT (Ctrl-C).

`Preemption` is a context manager around the training loop: while it is
active a first SIGTERM/SIGINT only sets a flag, the loop finishes the
current step, saves it and exits 0; a second SIGINT interrupts at once
(KeyboardInterrupt), for a user who does not want to wait. The previous
handlers come back when the loop ends.

With several processes every host must stop at the same step, or their
checkpoints would not match. When jax.distributed runs its preemption
service, JAX's own SIGTERM notifier is left in place and
`reached_preemption_sync_point(step)` tells all hosts the same step to stop
at (a Ctrl-C is passed on to that notifier as a SIGTERM); otherwise the
hosts agree through an all-gather of their flags (one tiny collective per
step, only in multi-process runs without the service).
"""

import os
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


def _service_available() -> bool:
    """Whether jax.distributed's preemption sync manager is running (multi-process runs only)."""
    try:
        from jax._src import distributed

        state = distributed.global_state
        return state.client is not None and state.preemption_sync_manager is not None
    except (ImportError, AttributeError):  # private API: treat a change as "not available"
        return False


class Preemption:
    """`with Preemption() as p: ... if p.should_stop(step): save and leave`."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.received: int | None = None  # the first signal's number
        self._previous: dict[int, object] = {}
        self._use_service = jax.process_count() > 1 and _service_available()

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user does not want to wait for the save
        if self.received is None:
            self.received = signum
            if self._use_service:  # hand Ctrl-C to JAX's notifier too, so every host stops with this one
                os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread; stop on nothing
        for sig in self.signals:
            if sig == signal.SIGTERM and self._use_service:
                continue  # JAX's notifier owns SIGTERM and syncs the hosts
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "preemption notice"

    def should_stop(self, step: int) -> bool:
        """True at the step where this run (all of its processes) should save and exit."""
        local = self.received is not None
        if jax.process_count() == 1:
            return local
        if self._use_service:  # a host-local check: no collective, no wait for the device
            return multihost_utils.reached_preemption_sync_point(step)
        flags = multihost_utils.process_allgather(np.int32(local))
        return bool(np.any(flags))

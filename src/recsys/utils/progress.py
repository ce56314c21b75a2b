"""Progress bars that keep piped logs small.

Lightning's ``TQDMProgressBar`` redraws on every ``refresh_rate``-th batch with an explicit ``refresh()``
(tqdm's own ``mininterval`` only throttles ``update()``), so a run piped into a file gets one line per step.
``TimedProgressBar`` redraws a bar at most once per ``piped_interval_s`` seconds when stdout is not a
terminal (the last step of a bar and its close are always drawn); on a terminal it behaves as Lightning's.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm


class ThrottledTqdm(Tqdm):
    """A Lightning ``Tqdm`` whose ``refresh()`` draws at most once per ``throttle_s`` seconds (0 = always)."""

    throttle_s: float = 0.0
    _last_draw: float = float("-inf")

    def refresh(self, nolock: bool = False, lock_args: Any = None) -> Any:
        if self.throttle_s > 0 and not self.disable:
            now = time.monotonic()
            finished = self.total is not None and self.n >= self.total
            if not finished and now - self._last_draw < self.throttle_s:
                return None
            self._last_draw = now
        return super().refresh(nolock=nolock, lock_args=lock_args)


class TimedProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` redrawing by time (``piped_interval_s``) instead of per batch when stdout is piped."""

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False,
                 piped_interval_s: float = 1.0) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.piped_interval_s = piped_interval_s

    def _throttle(self, bar: Tqdm) -> Tqdm:
        interval = 0.0 if _is_terminal() else self.piped_interval_s
        if interval > 0:
            bar.__class__ = ThrottledTqdm  # same object and state; only refresh() changes
            bar.throttle_s = interval
            bar.mininterval = interval
        return bar

    def init_sanity_tqdm(self) -> Tqdm:
        return self._throttle(super().init_sanity_tqdm())

    def init_train_tqdm(self) -> Tqdm:
        return self._throttle(super().init_train_tqdm())

    def init_validation_tqdm(self) -> Tqdm:
        return self._throttle(super().init_validation_tqdm())

    def init_test_tqdm(self) -> Tqdm:
        return self._throttle(super().init_test_tqdm())

    def init_predict_tqdm(self) -> Tqdm:
        return self._throttle(super().init_predict_tqdm())


def _is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False

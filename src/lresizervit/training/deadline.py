"""A time budget for training: a Kaggle session ends at a fixed time, and what is not written by then is lost.

`LRESIZERVIT_DEADLINE` (unix seconds; unset = no budget) is the time by which `train` must have ended. The
trainer then stops a fold at an epoch end when the next epoch, and after it the fold's OOF prediction,
would not end before the deadline. Such a fold is left unfinished on purpose: no oof.csv, no metrics.json,
its backup/ holding the last completed epoch; `train` prints one line saying so and exits 75 (EX_TEMPFAIL),
and training the fold again, in a session with time left, resumes it from that epoch. A fold is not
started at all when less time is left than its first epoch would take (estimated from the experiment's
history.csv files, i.e. folds trained before on this kind of machine) or than a minimum: building the model
and reaching the first epoch end costs minutes that would be thrown away.

The estimates, each tunable by an environment variable (the session's business, not the experiment's,
so not config keys; read when `train` starts):
  next epoch  = the slowest epoch measured in this process (the first includes the graph trace / XLA
                compile, so it errs long) x LRESIZERVIT_DEADLINE_MARGIN (default 1.15)
  OOF         = the slowest validation pass x the TTA views x the margin + LRESIZERVIT_DEADLINE_RESERVE_S
                (default 60: rebuilding the best model from its files, writing the fold's files)
  first epoch = the slowest epoch in the experiment's history.csv files x the margin + the reserve, and at
                least LRESIZERVIT_DEADLINE_MIN_START_S (default 300)
`LRESIZERVIT_SIMULATE_EPOCH_S` is for tests: every epoch counts as that many seconds more than it took,
against the deadline and in the estimates, so a test gets the stopping epoch it asks for on any machine.

Standard library only at import (`train` checks the start before Keras is imported); the Keras callback is
made by `stop_callback`.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ENV = "LRESIZERVIT_DEADLINE"
MARGIN_ENV = "LRESIZERVIT_DEADLINE_MARGIN"
RESERVE_ENV = "LRESIZERVIT_DEADLINE_RESERVE_S"
MIN_START_ENV = "LRESIZERVIT_DEADLINE_MIN_START_S"
SIMULATE_ENV = "LRESIZERVIT_SIMULATE_EPOCH_S"
# sysexits.h's EX_TEMPFAIL: "a temporary failure; the user is invited to retry". train_folds.sh and the Kaggle
# training kernel read it as "interrupted, resumable", distinct from a failure (1, 2) and a kill (137, 143).
EXIT_TEMPFAIL = 75


class TimeBudgetExceeded(Exception):
    """A fold stopped, or did not start, so as to end before the deadline; its backup resumes it."""


def duration(seconds: float) -> str:
    """3725 -> '1h02m', 185 -> '3m05s', 42.4 -> '42s'."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _number(environ, name: str, default: float | None, what: str) -> float | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={raw!r}: not {what}")
    return value


def past_epochs(run_dir: Path) -> tuple[float, float]:
    """(slowest epoch, slowest validation pass) in seconds over every fold's history.csv in `run_dir`
    (0.0 where none was recorded)."""
    slowest = val = 0.0
    for path in sorted(Path(run_dir).glob("fold_*/history.csv")):
        try:
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    epoch_s, train_s = float(row.get("epoch_seconds") or 0), float(row.get("train_seconds") or 0)
                    slowest, val = max(slowest, epoch_s), max(val, epoch_s - train_s)
        except (OSError, ValueError, csv.Error):
            continue  # a damaged history is the trainer's to report; here it only estimates nothing
    return slowest, val


@dataclass
class Deadline:
    """When training must have ended, and how the time things take is estimated (module docstring)."""

    at: float  # unix seconds
    margin: float = 1.15
    reserve_s: float = 60.0
    min_start_s: float = 300.0
    simulate_epoch_s: float = 0.0
    clock: Callable[[], float] = field(default=time.time, repr=False)
    skew: float = 0.0  # simulated seconds so far

    @classmethod
    def from_env(cls, environ=None) -> Deadline | None:
        """The deadline of LRESIZERVIT_DEADLINE and its tuning variables, or None when it is unset; a bad
        value is a ValueError naming the variable."""
        environ = os.environ if environ is None else environ
        at = _number(environ, ENV, None, "a time in unix seconds")
        if at is None:
            return None
        return cls(at=at, margin=max(1.0, _number(environ, MARGIN_ENV, 1.15, "a factor >= 1")),
                   reserve_s=_number(environ, RESERVE_ENV, 60.0, "a number of seconds"),
                   min_start_s=_number(environ, MIN_START_ENV, 300.0, "a number of seconds"),
                   simulate_epoch_s=_number(environ, SIMULATE_ENV, 0.0, "a number of seconds"))

    def now(self) -> float:
        return self.clock() + self.skew

    def left(self) -> float:
        return self.at - self.now()

    def when(self) -> str:
        return time.strftime("%H:%M:%S UTC", time.gmtime(self.at))

    def epoch_s(self, slowest_epoch_s: float) -> float:
        return slowest_epoch_s * self.margin

    def oof_s(self, slowest_val_s: float, views: int) -> float:
        return slowest_val_s * views * self.margin + self.reserve_s

    def check_start(self, run_dir: Path, fold: int, epochs: int, views: int, done: int) -> None:
        """Raise TimeBudgetExceeded when fold `fold`, `done` of its `epochs` epochs behind it, should not
        start: less time left than its next step (an epoch, or only its OOF) would take, or the minimum."""
        slowest, val = past_epochs(run_dir)
        slowest += self.simulate_epoch_s if slowest else 0.0
        if done >= epochs:
            need, what = self.oof_s(val, views), "its OOF prediction"
        else:
            need, what = max(self.min_start_s, self.epoch_s(slowest) + self.reserve_s), "its next epoch"
            if not slowest:
                what = "the minimum to start a fold (no epoch timed yet)"
        left = self.left()
        if left < need:
            step = "resumes it after epoch " + str(done) if done else "trains it"
            raise TimeBudgetExceeded(
                f"fold {fold}: not started: {duration(left)} left before the time budget ends at {self.when()}, "
                f"less than {what} needs (~{duration(need)}); running it again with more time {step}")


def stop_callback(deadline: Deadline, fold: int, epochs: int, views: int):
    """A Keras callback that stops `fit` at the end of the epoch after which the next one, plus the OOF, would
    not end before the deadline; `stopped` then says so. It must run after the backup callback, so the
    epoch it stops after is saved."""
    import keras

    class DeadlineStop(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.slowest = self.slowest_val = 0.0
            self.stopped: str | None = None  # the line `train` prints

        def on_epoch_begin(self, epoch, logs=None):
            self._t0, self._tv = deadline.now(), None

        def on_test_begin(self, logs=None):
            if getattr(self, "_t0", None) is not None and self._tv is None:
                self._tv = deadline.now()

        def on_epoch_end(self, epoch, logs=None):
            end = deadline.now()
            self.slowest_val = max(self.slowest_val, end - (self._tv or end))
            deadline.skew += deadline.simulate_epoch_s  # the epoch counts longer; its validation does not
            end = deadline.now()
            self.slowest = max(self.slowest, end - self._t0)
            done, oof = epoch + 1, deadline.oof_s(self.slowest_val, views)
            # The monitor (earlier in the list) may have stopped the fold already: patience ran out.
            last = done >= epochs or self.model.stop_training
            need = oof if last else deadline.epoch_s(self.slowest) + oof
            left = deadline.left()
            if left >= need:
                return
            self.model.stop_training = True
            what = (f"its OOF prediction ~{duration(oof)}" if last else
                    f"the next epoch ~{duration(deadline.epoch_s(self.slowest))} plus its OOF ~{duration(oof)}")
            self.stopped = (f"fold {fold}: stopped after epoch {done} of {epochs} to end before the time budget "
                            f"({duration(left)} left before {deadline.when()}, {what}); its backup resumes it")

    return DeadlineStop()


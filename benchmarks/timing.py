"""The timing harness of the PPO iteration benchmark: a clock that splits each training-loop iteration into phases
by wrapping the functions the loop calls, and checks that every wrapped function did run.

A wrapper only times calls made through the name it replaced. If the trainer stops looking a function up there (an
import moved, a helper was inlined), the wrapper is never called and that time silently lands in "rest";
`PhaseClock.check_calls` turns that into an error naming the wrapped function.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import Counter, defaultdict

import torch

MAIN_PHASES = ("generation", "scoring", "update")
REST_PHASES = ("feature fetch", "decode answers", "VQA accuracy", "metrics + log", "empty_cache", "gc.collect")


def on_cuda() -> bool:
    return torch.cuda.is_available()


def sync() -> None:
    if on_cuda():
        torch.cuda.synchronize()


class PhaseClock:
    """Seconds per phase, per iteration. One phase at a time: a timed call made inside another phase's call (or
    inside the update window) counts to that outer phase. It also counts, per iteration, the calls of each wrapped
    function (`check_calls`)."""

    def __init__(self):
        self.active: str | None = None
        self.window_start = 0.0
        self.totals: dict[str, float] = defaultdict(float)
        self.iterations: list[dict] = []
        self.last_mark: float | None = None
        self.notes: dict = defaultdict(list)
        self.expected: dict[str, str] = {}  # wrapped function -> its phase; each must run in every timed iteration
        self.calls: Counter = Counter()
        self.calls_per_iteration: list[dict[str, int]] = []

    def wrap(self, fn, phase: str, synchronise: bool = True, when=None, note=None, name: str | None = None):
        """`fn` timed to `phase` (unless `when()` is false, then only passed through). `name`: how errors call it,
        by default its module and qualified name; name a module-level function where the trainer looks it up."""
        name = name or qualified_name(fn)
        self.expected[name] = phase

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if when is not None and not when():
                return fn(*args, **kwargs)
            self.calls[name] += 1
            if self.active is not None:
                return fn(*args, **kwargs)
            if synchronise:
                sync()
            self.active, start = phase, time.perf_counter()
            try:
                out = fn(*args, **kwargs)
                if synchronise:
                    sync()
            finally:
                self.totals[phase] += time.perf_counter() - start
                self.active = None
            if note is not None:
                note(self, out)
            return out

        return timed

    def wrap_attribute(self, owner, attribute: str, phase: str, **kwargs) -> tuple:
        """An (owner, attribute, timed replacement) triple for `patched`, named `<owner>.<attribute>`: the name the
        trainer's code looks the function up by."""
        name = f"{getattr(owner, '__name__', type(owner).__name__)}.{attribute}"
        return owner, attribute, self.wrap(getattr(owner, attribute), phase, name=name, **kwargs)

    def counted(self, fn, name: str, phase: str = "its own timer"):
        """`fn` untimed but its calls counted: for the hooks that time by other means (windows, dispatch)."""
        self.expected[name] = phase

        @functools.wraps(fn)
        def counting(*args, **kwargs):
            self.calls[name] += 1
            return fn(*args, **kwargs)

        return counting

    def check_calls(self, warmup: int = 1) -> None:
        """Fail if a wrapped function was not called in some timed iteration (the iterations `summarise` averages):
        its time would have gone to "rest" unseen."""
        timed = self.calls_per_iteration[warmup:] or self.calls_per_iteration
        if not timed:
            raise AssertionError("timing harness: no iteration was timed (no on_step_end after on_train_begin)")
        for index, calls in enumerate(timed, start=len(self.calls_per_iteration) - len(timed)):
            missing = [name for name in self.expected if not calls.get(name)]
            if missing:
                raise AssertionError(
                    f"timing harness: iteration {index} never called "
                    + ", ".join(f"{name} (timed as {self.expected[name]!r})" for name in missing)
                    + ". The trainer no longer calls these by the wrapped name (moved import? inlined helper?), so "
                    "their time went to 'rest' unseen: wrap each where the trainer looks it up now."
                )

    def begin_window(self, phase: str) -> None:
        sync()
        self.active, self.window_start = phase, time.perf_counter()

    def end_window(self) -> None:
        sync()
        self.totals[self.active] += time.perf_counter() - self.window_start
        self.active = None

    def mark(self) -> None:
        """Iteration boundary: close the running iteration (if one is open) and open the next."""
        sync()
        now = time.perf_counter()
        if self.last_mark is not None:
            record = {"iteration": now - self.last_mark, **{k: self.totals.get(k, 0.0) for k in MAIN_PHASES}}
            record["rest"] = record["iteration"] - sum(record[k] for k in MAIN_PHASES)
            for key in REST_PHASES:
                if key in self.totals:
                    record[key] = self.totals[key]
            record["other"] = record["rest"] - sum(record.get(k, 0.0) for k in REST_PHASES)
            self.iterations.append(record)
            self.calls_per_iteration.append(dict(self.calls))
        self.totals = defaultdict(float)
        self.calls = Counter()
        self.last_mark = now


def qualified_name(fn) -> str:
    return f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', repr(fn))}"


def timing_callback(clock: PhaseClock):
    from transformers import TrainerCallback

    class IterationClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.mark()

        def on_step_end(self, args, state, control, **kwargs):
            clock.mark()

    return IterationClock()


@contextlib.contextmanager
def patched(*patches):
    """(owner, attribute, replacement) triples, restored on exit."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def quiet(trainer) -> None:
    """Drop the progress bar / log printer (both trainers alike): the figures are printed at the end."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(cb)


def summarise(clock: PhaseClock, warmup: int = 1) -> dict:
    """Mean seconds per phase over the iterations after `warmup` (all of them if there are no more)."""
    timed = clock.iterations[warmup:] or clock.iterations
    keys = sorted({k for it in timed for k in it})
    return {
        "mean": {k: sum(it.get(k, 0.0) for it in timed) / len(timed) for k in keys},
        "iterations": clock.iterations,
        "timed_iterations": len(timed),
    }

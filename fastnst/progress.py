"""What a long command shows while it works: a live bar on a terminal, plain lines in a log."""

from __future__ import annotations

import time

from fastnst.config import J_TERMS


class TrainProgress:
    """Progress of a training run: a live bar on a terminal, periodic log lines otherwise."""

    def __init__(self, total: int | None, start: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True, soft_wrap=True)  # a line in a log stays one line
        self.live = self.console.is_terminal
        self.total, self.last_line = total, 0
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 TextColumn("{task.fields[losses]}"), console=self.console, disable=not self.live)
        self.task = self.progress.add_task("train", total=total, completed=start, losses="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def update(self, step: int, records: list[dict], names: list[str]) -> None:
        r = records[0]
        if len(records) == 1:
            extra = "".join(f" {k} {r[k]:.3g}" for k in ("teacher", "temporal") if k in r)
            j = sum(r[k] for k in J_TERMS)  # J is the objective; the teacher and stability terms are extra
            text = f"J {j:.4g} (content {r['content']:.3g} style {r['style']:.3g} tv {r['tv']:.3g}{extra})"
        else:
            text = "J " + ", ".join(f"{name} {rec['total']:.4g}" for name, rec in zip(names, records))
        text += f" {r['images_per_s']:.1f} img/s"
        self.progress.update(self.task, completed=step, losses=text)
        if not self.live and (step - self.last_line >= 100 or step == self.total):
            total = f"/{self.total}" if self.total else ""
            self.console.print(f"step {step}{total}  {text}", highlight=False)
            self.last_line = step

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", highlight=False, markup=False)


class StylizeProgress:
    """Files done (and frames of the current video) on a terminal; errors as lines."""

    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True, soft_wrap=True)  # a line in a log stays one line
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console,
                                 disable=not self.console.is_terminal)
        self.files = self.progress.add_task("files", total=total, rate="")
        self.video = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def frames(self, done: int, total: int | None) -> None:
        """`done` frames of the current video written so far (of `total`, when known)."""
        now = time.perf_counter()
        if self.video is None:
            self.video = self.progress.add_task("frames", total=total, rate="")
            self.first = (done, now)  # frames/s counts what follows the first batch, over the time since
        self.written = done
        first_done, t0 = self.first
        rate = f"{(done - first_done) / (now - t0):.1f} frames/s" if done > first_done and now > t0 else ""
        self.progress.update(self.video, completed=done, total=total, rate=rate)
        self.rate = rate

    def done(self, job) -> None:
        self.progress.advance(self.files)
        if self.video is not None:
            self.progress.remove_task(self.video)
            if not self.console.is_terminal:
                self.console.print(f"{job.dst}: {self.written} frame{'s' * (self.written != 1)}"
                                   + (f", {self.rate}" if self.rate else ""), highlight=False, markup=False)
            self.video = None

    def error(self, message: str) -> None:
        self.console.print(f"fastnst: error: {message}", highlight=False, markup=False)

"""A progress bar over files and bytes (``rich``), drawn on stderr when it is a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)


class FilesAndBytes:
    """Implements ``cis.storage.backup.ProgressSink``."""

    def __init__(self, label: str) -> None:
        self._label = label
        console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._task: TaskID | None = None
        self._files = 0
        self._done = 0

    def _describe(self) -> str:
        return f"{self._label} {self._done}/{self._files} files"

    def begin(self, files: int, total_bytes: int) -> None:
        self._files, self._done = files, 0
        self._progress.start()
        self._task = self._progress.add_task(self._describe(), total=max(total_bytes, 1))

    def advance(self, name: str, size: int) -> None:
        if self._task is not None:
            self._done += 1
            self._progress.update(self._task, advance=size, description=self._describe())

    def end(self) -> None:
        self._progress.stop()

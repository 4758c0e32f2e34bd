"""Read a cohort's files on several threads while keeping the sequential loop's order and errors.

File decoding (zlib for ``.nii.gz``, Pillow for PNG/JPEG) releases the GIL, so threads overlap
the reads of many cases. The loop that assembles the cases still runs in order and asks for
each result where it would have read the file, so a bad file raises the same error, at the same
case, as a sequential read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from probes.core.validate import check_int

T = TypeVar("T")

__all__ = ["prefetch"]


@contextmanager
def prefetch(calls: Sequence[Callable[[], T]], num_workers: int = 0) -> Iterator[list[Callable[[], T]]]:
    """One getter per call, in order: ``get()`` returns that call's result or raises its error.

    ``num_workers = 0`` runs each call when its getter is called (the plain sequential loop);
    ``num_workers > 0`` starts every call at once on that many threads. Calls not yet started
    when the block exits (an error in the loop) are cancelled.
    """
    n = check_int(num_workers, "num_workers", minimum=0)
    if n == 0:
        yield list(calls)
        return
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="medaudit-read") as pool:
        futures = [pool.submit(c) for c in calls]
        try:
            yield [f.result for f in futures]
        finally:
            for f in futures:
                f.cancel()

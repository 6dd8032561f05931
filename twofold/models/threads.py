"""Torch's thread policy, set once per process at start.

``torch.set_num_threads`` is process-wide: changing it around a call (as the SPLADE
query encoder once did) races between concurrent requests and can leave every later
call on one thread. The service and the CLI call :func:`set_torch_threads` once, before
any model runs; nothing else touches the setting.
"""

from __future__ import annotations

import logging
import threading

from twofold.core.errors import InputError

log = logging.getLogger(__name__)
_LOCK = threading.Lock()


def set_torch_threads(n: int | None) -> int:
    """Set torch's intra-op threads to ``n`` (``None``: leave torch's default, the
    number of cores); returns the count now in force."""
    import torch

    with _LOCK:
        if n is not None:
            if n < 1:
                raise InputError(f"torch threads must be >= 1, not {n}")
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)
        current = int(torch.get_num_threads())
    log.info("torch intra-op threads: %d", current)
    return current

"""Invoicing's periodic sweeps (booking requests left unanswered, package expiry): a round every
``interval`` seconds, another at once while the last one found more to do, until stopped. Every
replica runs each sweep; their queries lock what they take (``SKIP LOCKED``), so two replicas
never do the same work."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import structlog
from packline_core.service import Service

log = structlog.get_logger(__name__)


class Sweep:
    """Subclasses say what one round does (:meth:`round`) and what they are called."""

    name: ClassVar[str]  # in the log: "<name> failed; retrying"
    task: ClassVar[str]  # the asyncio task's name, after the service's

    def __init__(self, service: Service, interval: float) -> None:
        self.service = service
        self.interval = interval
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def round(self) -> bool:
        """One round of work; True when another should follow at once (it found a full batch)."""
        raise NotImplementedError

    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self.run(), name=f"{self.service.name}-{self.task}")

    async def stop(self) -> None:
        """Let a round in progress commit, then end (called before the pool closes)."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                while await self.round() and not self._stop.is_set():
                    pass
            except Exception:  # the database may be down: try again next round, keep running
                log.exception(f"{self.name} failed; retrying")
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                pass

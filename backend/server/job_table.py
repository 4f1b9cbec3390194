"""The jobs a queue of the service keeps, by id: active ones, and finished ones for a while so
that a client can still read the result, then dropped. Task jobs (backend.server.jobs) and
training jobs (backend.server.training_jobs) both keep theirs here."""

from __future__ import annotations

import threading
import time
from typing import Generic, Protocol, TypeVar


class KeptJob(Protocol):
    finished: float | None  # when it ended (time.time()); None while active


J = TypeVar("J", bound=KeptJob)


class JobTable(Generic[J]):
    """`jobs` by id under `cond`, the condition the owning queue also waits on."""

    def __init__(self, result_ttl_s: float):
        self.result_ttl_s = result_ttl_s
        self.cond = threading.Condition()
        self.jobs: dict[str, J] = {}

    def get(self, job_id: str) -> J | None:
        with self.cond:
            self._purge()
            return self.jobs.get(job_id)

    def list(self) -> list[J]:
        with self.cond:
            self._purge()
            return list(self.jobs.values())

    def _purge(self) -> None:
        """Drop finished jobs older than the TTL (caller holds the lock)."""
        limit = time.time() - self.result_ttl_s
        for job_id in [j for j, job in self.jobs.items() if job.finished is not None and job.finished < limit]:
            del self.jobs[job_id]

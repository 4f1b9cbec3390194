"""Training jobs: `rscovlm train export | fit | grpo` run by the service, each in a child process.

A child, not a thread: training loads a second copy of the model, allocates for hours and can
crash or run out of memory; none of that may reach the process that serves the model. The child
is `python -m training.runner export|fit|grpo` (training/runner.py), given its request as JSON on
stdin; it reports progress, the result or its one-line error as JSON lines on stdout, and runs
at a lower CPU priority. The backend never imports `training` (training depends on the backend).

One training job runs at a time; the others wait queued, in the order they came. Two jobs never
write into one folder at once, and a fit submitted again after a cancel starts only once the
cancelled one has written its checkpoint, and so resumes from it.

Cancel is SIGINT to the child: an export stops after the tile in flight and leaves nothing; a
fit finishes its step, writes a checkpoint and stops (state `cancelling` until it has). The
child starts in a session of its own, so a Ctrl-C meant for the server reaches it only through
the server, which stops training this way when it stops.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque

from pydantic import BaseModel, ValidationError

from backend.contract import (
    ExportTrainingRequest,
    FitTrainingRequest,
    GrpoTrainingRequest,
    TrainingJobStatus,
    TrainingKind,
    TrainingOutputs,
    TrainingProgress,
)
from backend.server.job_table import JobTable
from backend.server.jobs import ServiceBusy

log = logging.getLogger("rscovlm.server.training")

RUNNER = "training.runner"
STDERR_LINES = 40  # kept for the error of a child that dies without saying why
STOPPED = "the server was stopped"


def training_installed() -> bool:
    return importlib.util.find_spec("training") is not None


class TrainingJob:
    def __init__(self, kind: TrainingKind, request: BaseModel):
        self.id = uuid.uuid4().hex
        self.kind = kind
        self.request = request
        self.state = "queued"
        self.progress = TrainingProgress(unit="tiles" if kind == "export" else "steps")
        self.outputs = TrainingOutputs()
        self.result: dict | None = None
        self.error: str | None = None
        self.submitted = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.process: subprocess.Popen | None = None
        self.listening = False  # the child handles stop signals (its first protocol line)
        self.stop_sent = False  # one SIGINT is a clean stop, a second would stop at once
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self.lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running", "cancelling")

    def status(self) -> TrainingJobStatus:
        with self.lock:
            return TrainingJobStatus(
                id=self.id, kind=self.kind, state=self.state, progress=self.progress.model_copy(), submitted=self.submitted,
                started=self.started, finished=self.finished, error=self.error, outputs=self.outputs.model_copy(),
                result=self.result,
            )  # fmt: skip

    def apply(self, event: dict) -> None:
        """One line of the runner's protocol."""
        with self.lock:
            kind = event.get("event")
            if kind == "listening":
                self.listening = True
            elif kind == "progress":
                self.progress = TrainingProgress.model_validate(event["progress"])
            elif kind in ("done", "failed", "cancelled"):
                self.outputs = TrainingOutputs.model_validate(event.get("outputs") or {})
                self.result = event.get("result")
                self.error = event.get("error")
                self._end(kind)

    def end_of_process(self, returncode: int) -> None:
        """The child exited: a job it did not end itself is cancelled (if asked) or failed."""
        with self.lock:
            if not self.active:
                return
            if self.state == "cancelling":
                self.error = self.error or "cancelled by the client"
                self._end("cancelled")
                return
            last = next((line for line in reversed(list(self.stderr)) if line.strip()), "no output")
            self.error = f"the training process ended with status {returncode} without a result ({last.strip()[:300]}); see the server's log."
            self._end("failed")

    def stop_signal_due(self) -> bool:
        """Whether to send the child its one stop signal now (call under the lock): cancelling,
        and the child listens; a signal sent before that could be lost."""
        due = self.state == "cancelling" and self.listening and not self.stop_sent and self.process is not None
        self.stop_sent = self.stop_sent or due
        return due

    def cancel_queued(self, reason: str) -> bool:
        with self.lock:
            if self.state != "queued":
                return False
            self.error = reason
            self._end("cancelled")
            return True

    def _end(self, state: str) -> None:
        self.state, self.finished = state, time.time()


class TrainingJobs(JobTable[TrainingJob]):
    """The training queue and the thread that runs its jobs one after another."""

    def __init__(self, python: str = sys.executable, result_ttl_s: float = 3600.0, max_queued: int = 100, stop_timeout_s: float = 600.0):
        super().__init__(result_ttl_s)
        self.python = python
        self.max_queued = max_queued
        self.stop_timeout_s = stop_timeout_s
        self.queue: deque[TrainingJob] = deque()
        self.stopping = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="rscovlm-training", daemon=True)
        self.thread.start()

    def stop(self) -> int:
        """Cancel what waits, stop what runs (a fit writes its checkpoint), wait for it; how many
        jobs were cancelled."""
        with self.cond:
            self.stopping = True
            cancelled = sum(job.cancel_queued(STOPPED) for job in self.queue)
            self.queue.clear()
            running = [job for job in self.jobs.values() if job.state in ("running", "cancelling")]
            self.cond.notify_all()
        for job in running:
            self._interrupt(job)
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(self.stop_timeout_s)
        for job in running:
            if job.process is not None and job.process.poll() is None:
                log.error("training job %s did not stop within %g s; killing it", job.id, self.stop_timeout_s)
                job.process.kill()
        return cancelled + len(running)

    def submit(self, kind: TrainingKind, request: ExportTrainingRequest | FitTrainingRequest | GrpoTrainingRequest) -> TrainingJob:
        with self.cond:
            if self.stopping:
                raise ServiceBusy("the server is stopping; send the request to a running one.")
            if len(self.queue) >= self.max_queued:
                raise ServiceBusy(f"{len(self.queue)} training jobs are waiting already; try again when some have finished.")
            self._purge()
            job = TrainingJob(kind, request)
            self.jobs[job.id] = job
            self.queue.append(job)
            self.cond.notify_all()
            return job

    def cancel(self, job_id: str) -> TrainingJob | None:
        """Cancel a queued job, stop a running one; a finished one is dropped."""
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            if job.cancel_queued("cancelled by the client"):
                self.queue.remove(job)
                return job
            if not job.active:
                del self.jobs[job_id]
                return job
        self._interrupt(job)
        return job

    def _interrupt(self, job: TrainingJob) -> None:
        with job.lock:
            if job.state != "running":
                return
            job.state = "cancelling"
            due = job.stop_signal_due()  # if not yet, _run signals when the child says it listens
        if due and job.process.poll() is None:
            job.process.send_signal(signal.SIGINT)

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait(timeout=1.0)
                if self.stopping:
                    return
                job = self.queue.popleft()
                with job.lock:
                    job.state, job.started = "running", time.time()
            try:
                self._run(job)
            except Exception as exc:  # a bug here must cost this job, not the queue
                log.exception("training job %s could not run", job.id)
                with job.lock:
                    if job.active:
                        job.error = f"internal error ({type(exc).__name__}: {exc})"
                        job._end("failed")

    def _run(self, job: TrainingJob) -> None:
        command = [self.python, "-m", RUNNER, job.kind]
        log.info("training job %s: %s", job.id, " ".join(command))
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            errors="replace", start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        with job.lock:
            job.process = process
        drain = threading.Thread(target=self._keep_stderr, args=(job, process), name=f"training-{job.id[:8]}-stderr", daemon=True)
        drain.start()
        try:
            process.stdin.write(job.request.model_dump_json())
            process.stdin.close()
        except BrokenPipeError:
            pass  # the child died at once; its stderr says why
        for line in process.stdout:
            try:
                job.apply(json.loads(line))
            except (ValueError, KeyError, TypeError, ValidationError) as exc:
                log.warning("training job %s: unreadable line from the runner (%s): %r", job.id, exc, line[:200])
            with job.lock:
                due = job.stop_signal_due()
            if due:
                process.send_signal(signal.SIGINT)
        returncode = process.wait()
        drain.join(5.0)
        job.end_of_process(returncode)
        if job.state == "failed":  # the child's last words, also when the server logs only warnings
            log.warning("training job %s failed: %s\n%s", job.id, job.error, "\n".join(job.stderr))
        else:
            log.info("training job %s: %s (exit status %d)", job.id, job.state, returncode)

    @staticmethod
    def _keep_stderr(job: TrainingJob, process: subprocess.Popen) -> None:
        for line in process.stderr:
            job.stderr.append(line.rstrip("\n"))
            log.info("training job %s: %s", job.id[:8], line.rstrip())

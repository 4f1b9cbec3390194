"""Jobs, and the one queue in front of the one model.

A single scheduler thread owns the engine. Each round, the work that has waited longest since
it was last served gets the first view of one engine batch (so nothing starves), and the rest of
the batch is filled with views of queued work that shares its batch key (task, answer length
and repetition penalty), the work with the fewest views left first (so small jobs finish fast, and jobs of one
size finish in the order they came). Twenty one-tile jobs become a few full batches instead of
twenty single passes, a small job is not stuck behind a thousand-tile one, and a cancelled job
stops at the end of the batch in flight.

A batch that fails is split by job, so one job's bad input fails that job only. When even a
probe (a plain grey image) fails, the engine itself is broken: it is loaded again and the batch
retried.

Chat completions queue here too, as single turns. So do the turns of the Zoom-in Chain, whose
next image depends on the previous answer: each chained job runs its own driver (a small pool of
threads) against a queue-backed engine, so its turns share batches with everything else.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import groupby

import numpy as np

from backend.contract import JobProgress, JobStatus, JobSummary, TaskRequest, TaskResult
from backend.drive import drive, open_run
from backend.engine import Engine, Generation
from backend.errors import Cancelled, UserError
from backend.pipeline import TaskRun
from backend.prompts import CAPTION_PROMPT, Conversation, single_turn
from backend.raster import crs_name
from backend.server.job_table import JobTable

log = logging.getLogger("rscovlm.server")

PROBE = single_turn(np.full((224, 224, 3), 128, np.uint8), CAPTION_PROMPT)
STOPPED = "the server was stopped"
CHAIN_DRIVERS = 8  # chained jobs in progress at once; each waits on one turn at a time


class ServiceBusy(Exception):
    """The queue is full or the server is stopping: try again later (HTTP 503)."""


class TaskJob:
    """One TaskRequest: its TaskRun, its state and the views handed out so far."""

    def __init__(self, run: TaskRun, tick: int):
        self.id = uuid.uuid4().hex
        self.run = run
        self.task = run.request.task
        self.key = (self.task, run.max_new_tokens, run.repetition_penalty)
        self.crs = crs_name(run.source.crs)
        self.state = "queued"
        self.error: str | None = None
        self.submitted = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.result: TaskResult | None = None
        self.seq = self.served = tick
        self.next_view = 0
        self.chained = run.zoom is not None and run.zoom.zoomed
        self.turns: list[Turn] = []  # a chained job's turns waiting in the queue
        self.turns_done = 0
        self.lock = threading.Lock()
        self._features = (-1, [])  # (views done, features merged from them): GETs reuse it

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def has_views(self) -> bool:
        return self.active and not self.chained and self.next_view < self.run.total

    def views_left(self) -> int:
        return self.run.total - self.next_view

    def claim(self) -> int:
        with self.lock:
            if self.state == "queued":
                self.state, self.started = "running", time.time()
            self.next_view += 1
            return self.next_view - 1

    def conversation(self, index: int) -> Conversation | None:
        """None when there is nothing to ask: the job was cancelled, or the view is all nodata."""
        with self.lock:
            return self.run.conversation(self.run.views[index]) if self.active else None

    def accept(self, index: int, generation: Generation) -> None:
        with self.lock:
            if self.active:
                self.run.accept(self.run.views[index], generation)

    def finish_if_complete(self) -> None:
        with self.lock:
            if not self.active or self.run.done < self.run.total:
                return
            try:
                self.result = self.run.result()
            except Exception as exc:  # a merge that fails is this job's problem, not the server's
                log.exception("job %s: merging the answers failed", self.id)
                self._end("failed", f"merging the answers failed ({type(exc).__name__}: {exc})")
                return
            self._end("done")

    def finish_with(self, result: TaskResult) -> None:
        with self.lock:
            if self.active:
                self.result = result
                self._end("done")

    def chain_progress(self, done: int, total: int) -> None:
        with self.lock:
            if self.state == "queued":
                self.state, self.started = "running", time.time()
            self.turns_done = done

    def fail(self, message: str) -> None:
        with self.lock:
            if self.active:
                self._end("failed", message)

    def cancel(self, reason: str) -> bool:
        with self.lock:
            if not self.active:
                return False
            self._end("cancelled", reason)
            turns, self.turns = self.turns, []
        for turn in turns:
            turn.cancel(reason)
        return True

    def _end(self, state: str, error: str | None = None) -> None:
        self.state, self.error, self.finished = state, error, time.time()
        if self.chained:  # its driver thread may be reading: it closes the run itself
            return
        try:
            if state != "done":
                self._merged_so_far()  # keep what was found before the raster closes
        except Exception:  # what failed the job may fail the merge too: the raster still closes
            log.exception("job %s: merging its answers so far failed", self.id)
        finally:
            self.run.close()

    def _merged_so_far(self) -> list:
        if self._features[0] != self.run.done:
            self._features = (self.run.done, self.run.features())
        return self._features[1]

    def summary(self) -> JobSummary:
        with self.lock:
            return JobSummary(**self._summary_fields())

    def _summary_fields(self) -> dict:
        return {
            "id": self.id,
            "task": self.task,
            "state": self.state,
            "progress": JobProgress(done=self.turns_done if self.chained else self.run.done, total=self.run.total),
            "submitted": self.submitted,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
        }

    def status(self) -> JobStatus:
        with self.lock:
            if self.result is not None:
                return JobStatus(**self._summary_fields(), crs=self.result.crs, result=self.result)
            features = self._merged_so_far() if self.active and not self.chained else self._features[1]
            return JobStatus(**self._summary_fields(), crs=self.crs, features=features)


class Turn:
    """One conversation to answer (a chat completion, or a turn of a chained job), through a Future."""

    def __init__(self, conversation: Conversation, key: tuple, tick: int):
        self.conversation_ = conversation
        self.key = key
        self.seq = self.served = tick
        self.future: Future[Generation] = Future()
        self.claimed = False

    @property
    def active(self) -> bool:
        return not self.future.done()

    def has_views(self) -> bool:
        return not self.claimed and self.active

    def views_left(self) -> int:
        return 0 if self.claimed else 1

    def claim(self) -> int:
        self.claimed = True
        return 0

    def conversation(self, index: int) -> Conversation | None:
        return self.conversation_ if self.active else None

    def accept(self, index: int, generation: Generation) -> None:
        if self.active:
            self.future.set_result(generation)

    def finish_if_complete(self) -> None:
        pass  # accept() completes it

    def fail(self, message: str) -> None:
        if self.active:
            self.future.set_exception(RuntimeError(message))

    def cancel(self, reason: str) -> bool:
        if not self.active:
            return False
        self.future.set_exception(Cancelled(reason))
        return True


class QueuedEngine:
    """The Engine protocol for a chained job's driver: generate() queues its conversations as
    turns of that job and waits for them."""

    def __init__(self, scheduler: Scheduler, job: TaskJob):
        self.scheduler = scheduler
        self.job = job
        self.model_id = scheduler.engine.model_id
        self.batch_size = scheduler.engine.batch_size
        self.defaults = scheduler.engine.defaults

    def generate(self, conversations: list[Conversation], max_new_tokens: int, repetition_penalty: float | None = None) -> list[Generation]:
        turns = [self.scheduler.enqueue_turn(c, (self.job.task, max_new_tokens, repetition_penalty), self.job) for c in conversations]
        return [turn.future.result() for turn in turns]

    def describe(self) -> dict:
        return self.scheduler.engine.describe()


Work = TaskJob | Turn


class Scheduler(JobTable[TaskJob]):
    def __init__(
        self,
        engine: Engine,
        reload: Callable[[], Engine] | None = None,
        result_ttl_s: float = 3600.0,
        max_jobs: int = 1000,
    ):
        super().__init__(result_ttl_s)
        self.engine = engine
        self.reload = reload
        self.max_jobs = max_jobs
        self.queue: list[Work] = []  # active work, oldest first
        self.tick = 0  # advances at each submission and each batch; orders who waited longest
        self.batches = 0
        self.views = 0
        self.engine_reloads = 0
        self.stopping = False
        self.started = time.time()
        self.thread: threading.Thread | None = None
        self.drivers = ThreadPoolExecutor(CHAIN_DRIVERS, thread_name_prefix="rscovlm-chain")

    # --- what the routes call ---

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="rscovlm-scheduler", daemon=True)
            self.thread.start()

    def stop(self, timeout_s: float | None = 60.0) -> int:
        """Cancel every queued and running job (the batch in flight is finished, its answers
        dropped) and stop the thread. Returns how many jobs were cancelled."""
        with self.cond:
            self.stopping = True
            work = list(self.queue)
            self.cond.notify_all()
        cancelled = sum(isinstance(w, TaskJob) and w.cancel(STOPPED) for w in work)
        for w in work:
            if isinstance(w, Turn):
                w.cancel(STOPPED)
        self.drivers.shutdown(wait=False, cancel_futures=True)
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout_s)
        return cancelled

    def submit(self, request: TaskRequest) -> TaskJob:
        """Plan the job now (bad input fails here, as a UserError) and queue it. Options the
        request leaves unset are the model's (its trained tile and view sizes)."""
        run = open_run(request, self.engine.model_id, self.engine.defaults)
        try:
            with self.cond:
                self._admit()
                self.tick += 1
                job = TaskJob(run, self.tick)
                self.jobs[job.id] = job
                if not job.chained:
                    self.queue.append(job)
                self.cond.notify_all()
            if job.chained:
                self.drivers.submit(self._drive_chain, job)
            return job
        except BaseException:
            run.close()
            raise

    def chat(self, conversation: Conversation, max_new_tokens: int) -> Future[Generation]:
        with self.cond:
            self._admit()
            return self._enqueue(Turn(conversation, ("chat", max_new_tokens, None), self.tick + 1)).future

    def enqueue_turn(self, conversation: Conversation, key: tuple, job: TaskJob) -> Turn:
        """A turn of an admitted chained job: never refused for a full queue."""
        with self.cond:
            turn = Turn(conversation, key, self.tick + 1)
            if self.stopping or not job.active:
                turn.cancel(job.error or STOPPED)
                return turn
            with job.lock:
                job.turns = [t for t in job.turns if t.active] + [turn]
            return self._enqueue(turn)

    def _enqueue(self, turn: Turn) -> Turn:
        self.tick += 1
        self.queue.append(turn)
        self.cond.notify_all()
        return turn

    def cancel(self, job_id: str) -> TaskJob | None:
        """Cancel a queued or running job; a finished one is dropped (its result freed)."""
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            if not job.cancel("cancelled by the client"):
                del self.jobs[job_id]
            self.cond.notify_all()
            return job

    def counts(self) -> dict[str, int]:
        with self.cond:
            self._purge()
            counts = {state: 0 for state in ("queued", "running", "done", "failed", "cancelled")}
            for job in self.jobs.values():
                counts[job.state] += 1
            return counts

    def _admit(self) -> None:
        if self.stopping:
            raise ServiceBusy("the server is stopping; send the request to a running one.")
        active = sum(1 for w in self.queue if w.active)
        if active >= self.max_jobs:
            raise ServiceBusy(f"the queue is full ({active} jobs waiting or running); try again when some have finished.")

    def _drive_chain(self, job: TaskJob) -> None:
        job.chain_progress(0, job.run.total)
        try:
            result = drive(job.run, QueuedEngine(self, job), job.chain_progress, lambda: not job.active)
        except Cancelled:
            pass  # cancel() already recorded why
        except Exception as exc:
            reason = str(exc) if isinstance(exc, (UserError, RuntimeError)) else f"{type(exc).__name__}: {exc}"
            log.warning("chained job %s failed: %s", job.id, reason)
            job.fail(reason)
        else:
            job.finish_with(result)
        finally:
            job.run.close()

    # --- the scheduler thread ---

    def _loop(self) -> None:
        while True:
            with self.cond:
                picks = self._next_batch()
                while picks is None and not self.stopping:
                    self._purge()
                    self.cond.wait(timeout=min(1.0, max(self.result_ttl_s, 0.05)))
                    picks = self._next_batch()
                if self.stopping:
                    return
            try:
                self._run_batch(picks)
            except Exception as exc:  # a bug here must cost these jobs, not the thread that serves all
                log.exception("a batch failed unexpectedly")
                for work, _ in picks:
                    work.fail(f"internal error ({type(exc).__name__}: {exc})")
            with self.cond:
                self.queue = [w for w in self.queue if w.active]
                self.cond.notify_all()

    def _next_batch(self) -> list[tuple[Work, int]] | None:
        """(work, view index) pairs for one engine batch; the caller holds the lock."""
        ready = [w for w in self.queue if w.has_views()]
        if not ready:
            return None
        leader = min(ready, key=lambda w: w.served)
        picks: list[tuple[Work, int]] = [(leader, leader.claim())]
        for work in sorted((w for w in ready if w.key == leader.key), key=lambda w: (w.views_left(), w.seq)):
            while len(picks) < self.engine.batch_size and work.has_views():
                picks.append((work, work.claim()))
        self.tick += 1
        for w, _ in picks:
            w.served = self.tick
        return picks

    def _run_batch(self, picks: list[tuple[Work, int]]) -> None:
        items = []
        for work, index in picks:
            try:
                conversation = work.conversation(index)
            except Exception as exc:
                log.warning("reading a view failed: %s", exc)
                work.fail(f"reading the raster failed ({type(exc).__name__}: {exc})")
                continue
            if conversation is not None:
                items.append((work, index, conversation))
        if items:
            self._answer(items, picks[0][0].key)
            self.batches += 1
        for work in {id(w): w for w, _ in picks}.values():
            work.finish_if_complete()

    def _answer(self, items: list[tuple[Work, int, Conversation]], key: tuple) -> None:
        try:
            generations = self._generate([c for _, _, c in items], key[1], key[2])
        except Exception as exc:
            groups = [list(g) for _, g in groupby(sorted(items, key=lambda i: id(i[0])), key=lambda i: id(i[0]))]
            if len(groups) > 1:  # find whose input it was
                for group in groups:
                    self._answer(group, key)
                return
            reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            log.warning("the model failed on a job: %s", reason)
            items[0][0].fail(f"the model could not answer this job ({reason})")
            return
        for (work, index, _), generation in zip(items, generations):
            work.accept(index, generation)
        self.views += len(items)

    def _generate(self, conversations: list[Conversation], max_new_tokens: int, repetition_penalty: float | None) -> list[Generation]:
        try:
            return self.engine.generate(conversations, max_new_tokens, repetition_penalty)
        except Exception:
            if self.reload is None or self._engine_answers():
                raise
        log.error("the engine fails even on a probe image; loading it again")
        self.engine.close()  # before loading: a GPU seldom holds two copies of the model
        self.engine = self.reload()
        self.engine_reloads += 1
        return self.engine.generate(conversations, max_new_tokens, repetition_penalty)

    def _engine_answers(self) -> bool:
        try:
            self.engine.generate([PROBE], 1)
        except Exception:
            log.exception("the engine failed on the probe image")
            return False
        return True

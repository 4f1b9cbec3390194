"""One training job of `rscovlm serve`, run in a child process of the service:

    python -m training.runner export|fit|grpo < request.json

reads an ExportTrainingRequest, FitTrainingRequest or GrpoTrainingRequest (backend.contract) as
JSON on stdin, runs it as `rscovlm train export | fit | grpo` would, and reports on stdout, one
JSON object a line:

    {"event": "listening"}   (its stop signals are handled from here on)
    {"event": "progress", "progress": TrainingProgress}
    {"event": "done", "outputs": TrainingOutputs, "result": manifest (export) | metrics (fit, grpo)}
    {"event": "failed", "error": "<one line: the problem and the fix>"}
    {"event": "cancelled", "error": "<where it stopped>", "outputs": TrainingOutputs}

stdout is the protocol: whatever the libraries print goes to stderr. SIGINT (or SIGTERM) stops
the job after the tile or step in flight: an export leaves nothing behind, a fit writes a
checkpoint that the same request resumes from. A second signal stops at once. Exit status: 0
done, 2 failed, 130 cancelled, 1 a crash (its traceback on stderr).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import TextIO

from backend.contract import ExportTrainingRequest, FitTrainingRequest, GrpoTrainingRequest, TrainingOutputs, TrainingProgress
from backend.errors import Cancelled, UserError
from training.fit import StopOnSignal

# The service's own model comes first when both want the CPU (benchmarks/bench_training_service.py);
# a machine that only trains can give the job full priority with RSCOVLM_TRAINING_NICENESS=0.
NICENESS_ENVIRONMENT = "RSCOVLM_TRAINING_NICENESS"
DEFAULT_NICENESS = 10
PR_SET_PDEATHSIG = 1


class Reporter:
    """Writes the protocol's JSON lines, flushed one by one."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def send(self, event: str, **fields) -> None:
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()

    def progress(self, progress: TrainingProgress) -> None:
        self.send("progress", progress=progress.model_dump())


def protocol_stream() -> TextIO:
    """The process's stdout for the protocol alone: file descriptor 1 then points at stderr, so
    prints of Python code and native libraries cannot break a line of it."""
    stream = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(2, 1)
    return stream


def stop_with_parent() -> None:
    """SIGINT when the service dies, so training never runs on unseen (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent was gone before the line above
        os.kill(os.getpid(), signal.SIGINT)


def lower_priority(niceness) -> None:
    """Nice the process; on Linux with autogroup scheduling also its session's group (nice only
    weighs within a group, and the service starts the runner in a session of its own). Only a
    session leader touches the group: a runner started from a terminal leaves the terminal's
    session alone."""
    try:
        niceness = int(niceness)
        os.nice(niceness)
    except (OSError, ValueError):
        return
    autogroup = Path("/proc/self/autogroup")
    if os.getsid(0) == os.getpid() and autogroup.exists():
        try:
            autogroup.write_text(str(niceness))
        except OSError:
            pass  # no autogroup scheduling, or not allowed: the process's own niceness still holds


def run_export(request: ExportTrainingRequest, report: Reporter, stop: StopOnSignal) -> dict:
    from training.export import ExportOptions, export_dataset

    options = ExportOptions(**request.options.model_dump(), extent=request.extent, extent_crs=request.extent_crs)
    manifest = export_dataset(
        request.raster, request.labels, request.out, request.class_field, request.class_name, request.text_field,
        request.caption_field, request.layer, options, request.overwrite,
        progress=lambda done, total: report.progress(TrainingProgress(done=done, total=total, unit="tiles")),
        should_stop=stop,
    )  # fmt: skip
    report.send("done", outputs=TrainingOutputs(dataset=str(Path(request.out).resolve())).model_dump(), result=manifest)
    return manifest


def fit_settings(request: FitTrainingRequest):
    """The settings `rscovlm train fit` would make of the same options."""
    from training.fit import settings_from_args

    args = argparse.Namespace(
        model=request.model, data=request.data, out=request.out, config=request.config, method=request.method,
        val_data=request.val_data, max_steps=request.max_steps, seed=request.seed, merge=request.merge,
        set=list(request.overrides), overwrite=request.overwrite,
    )  # fmt: skip
    return settings_from_args(args)


def fit_outputs(out: Path, summary: dict | None = None) -> TrainingOutputs:
    from training.checkpoints import complete_checkpoints

    checkpoints = complete_checkpoints(out)
    outputs = TrainingOutputs(run=str(out.resolve()), checkpoint=str(checkpoints[-1][1].resolve()) if checkpoints else None)
    if summary is not None:
        kind = "model" if summary.get("method") == "full" else "adapter"
        setattr(outputs, kind, summary.get("result"))
        outputs.merged = summary.get("merged")
    return outputs


def run_fit(request: FitTrainingRequest, report: Reporter, stop: StopOnSignal) -> dict:
    from training.fit import fit

    settings = fit_settings(request)
    latest = TrainingProgress(unit="steps")

    def show(status) -> None:
        nonlocal latest
        latest = TrainingProgress(
            done=status.step, total=status.total_steps, unit="steps", epoch=status.epoch,
            loss=status.loss if status.loss is not None else latest.loss,  # a validation report has no step loss
            learning_rate=status.learning_rate, val_loss=status.val_loss, val_ap_nc=status.val_ap_nc,
        )  # fmt: skip
        report.progress(latest)

    return _train_and_report(lambda: fit(settings, progress=show, should_stop=stop), Path(settings.out), fit_outputs, lambda: latest, report)


def grpo_settings(request: GrpoTrainingRequest):
    """The settings `rscovlm train grpo` would make of the same options."""
    from training.grpo import settings_from_args

    args = argparse.Namespace(model=request.model, adapter=request.adapter, data=request.data, out=request.out, config=request.config,
                              max_steps=request.max_steps, merge=request.merge, set=list(request.overrides), overwrite=request.overwrite)
    return settings_from_args(args)


def grpo_outputs(out: Path, summary: dict | None = None) -> TrainingOutputs:
    from training.grpo import latest_checkpoint

    checkpoint = latest_checkpoint(out) if out.is_dir() else None
    outputs = TrainingOutputs(run=str(out.resolve()), checkpoint=str(checkpoint.resolve()) if checkpoint else None)
    if summary is not None:
        outputs.adapter, outputs.merged = summary.get("result"), summary.get("merged")
    return outputs


def run_grpo(request: GrpoTrainingRequest, report: Reporter, stop: StopOnSignal) -> dict:
    from training.grpo import grpo

    settings = grpo_settings(request)
    latest = TrainingProgress(unit="steps")

    def show(status) -> None:
        nonlocal latest
        latest = TrainingProgress(done=status.step, total=status.total_steps, unit="steps", reward=status.reward, rewards=status.rewards)
        report.progress(latest)

    return _train_and_report(lambda: grpo(settings, progress=show, should_stop=stop), Path(settings.out), grpo_outputs, lambda: latest, report)


def _train_and_report(train, out: Path, outputs, latest, report: Reporter) -> dict:
    """Run `train()`; report its result, or where a cancel stopped it (`latest()`: the last
    progress) and the checkpoint that resumes it. `outputs(out, summary)`: the run's folders."""
    try:
        summary = train()
    except Cancelled:
        report.send("cancelled", error=_stopped_at(latest(), out), outputs=outputs(out).model_dump())
        raise
    report.send("done", outputs=outputs(out, summary).model_dump(), result=summary)
    return summary


def _stopped_at(latest: TrainingProgress, out: Path) -> str:
    where = f"stopped at step {latest.done} of {latest.total}" if latest.total else "stopped before the first step"
    return f"{where}; the checkpoint in {out / 'checkpoints'} resumes it when the same request is submitted again."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.runner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["export", "fit", "grpo"])
    args = parser.parse_args(argv)
    report = Reporter(protocol_stream())
    with StopOnSignal() as stop:
        # A signal that came while the libraries were still importing could be lost (or swallowed
        # by an import's bare except); the service signals only after this line.
        report.send("listening")
        stop_with_parent()
        lower_priority(os.environ.get(NICENESS_ENVIRONMENT, DEFAULT_NICENESS))
        request = None
        try:
            if args.kind == "export":
                request = ExportTrainingRequest.model_validate_json(sys.stdin.read())
                run_export(request, report, stop)
            elif args.kind == "fit":
                request = FitTrainingRequest.model_validate_json(sys.stdin.read())
                run_fit(request, report, stop)
            else:
                request = GrpoTrainingRequest.model_validate_json(sys.stdin.read())
                run_grpo(request, report, stop)
        except UserError as exc:
            report.send("failed", error=str(exc))
            return 2
        except Cancelled as exc:
            if args.kind == "export":
                report.send("cancelled", error=f"{exc}; nothing was written.", outputs=TrainingOutputs().model_dump())
            return 130
        except KeyboardInterrupt:  # a second signal: stopped at once
            kept = (fit_outputs(Path(request.out)) if isinstance(request, FitTrainingRequest)
                    else grpo_outputs(Path(request.out)) if isinstance(request, GrpoTrainingRequest) else TrainingOutputs())
            what = "the newest complete checkpoint is kept" if kept.checkpoint else "nothing was kept"
            report.send("cancelled", error=f"stopped at once; {what}.", outputs=kept.model_dump())
            return 130
        except Exception as exc:  # noqa: BLE001 - the service shows one line; the traceback goes to its log
            traceback.print_exc()
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            report.send("failed", error=f"training failed unexpectedly ({type(exc).__name__}: {first}); see the server's log.")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

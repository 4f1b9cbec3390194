"""Recipes for the demo checkpoint, compared at equal wall time: which way of training a
from-scratch Qwen2.5-VL learns fastest where objects are.

A recipe is a model size and one or more phases; a phase is a share of the wall-time budget,
a data plan (training.demo_data: dense or sparse views, which tasks) and fit settings
(training.fit: learning rate, batch, the dense head's weight). Each phase is an ordinary
`training.fit` run whose model the next phase starts from, so the recipe chosen is what
`make demo-model` then runs at full length. Every phase validates on the same fixed probe (the
validation split of the standard co-training data: dense tiles, every class asked), so the
curves compare: validation loss, detection AP_nc of greedy answers, grounding Acc@0.5, and at
the end how well the model predicts where, shape and class (training.localisation), against
wall seconds of training (validation time left out).

    python -m training.recipes --recipes cotrain,localise-first,localise-first+dense --minutes 20 \\
        --threads 1 --work runs/recipes --out benchmarks/results/localisation_recipes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from backend.atomic import write_text
from training.demo_data import DemoDataPlan, build_demo_data, check_demo_data
from training.run_folder import read_log

CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
CALIBRATION_STEPS = 12  # steps timed to size a phase's schedule to its share of the budget
EVALUATIONS_PER_PHASE = 3


@dataclass(frozen=True)
class Phase:
    share: float  # of the recipe's wall-time budget in the trials
    data: str  # "sparse": detection and grounding alone on views of a few objects; "dense": co-training on every task
    overrides: tuple[str, ...] = ()  # FitConfig keys as key=value (training.fit's --set)
    step_share: float | None = None  # of the steps at full length (`make demo-model`); default: `share`


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    phases: tuple[Phase, ...]
    size: str = "demo"  # training.scratch size
    view_zoom: float = 1.0  # detection tiles enlarged this much (training.demo_data), its probe too


# The data every recipe is measured on, and that co-training phases train on (a smaller plan
# than `make demo-model`'s, so the trials' data is made in minutes).
TRIAL_PLAN = DemoDataPlan(scenes=160, tiles_per_scene=20, zoom_scenes=30, val_scenes=12, val_zoom_scenes=4, change_scenes=0,
                          val_change_scenes=0)


def sparse_plan(plan: DemoDataPlan) -> DemoDataPlan:
    """Localisation only: detection and grounding on sparse views (one to four objects) of the
    same scenes, no other task."""
    return replace(plan, max_objects=4, ground_share=1.0, vqa_share=0.0, caption_share=0.0, classify_share=0.0, zoom_scenes=0,
                   val_zoom_scenes=0, whole_views=False, change_scenes=0, val_change_scenes=0)


def phase_plan(kind: str, plan: DemoDataPlan) -> DemoDataPlan:
    """The data plan of a phase's kind of data ("sparse" or "dense")."""
    return sparse_plan(plan) if kind == "sparse" else plan


RECIPES = {
    "cotrain": Recipe("cotrain", "the earlier shipped recipe: every task co-trained on dense tiles from the start", (Phase(1.0, "dense"),)),
    # At equal time the sparse phase took 68% of the trial's steps (its steps are shorter);
    # `make demo-model`, which runs a number of steps, gives it 60%.
    "localise-first": Recipe(
        "localise-first",
        "detection and grounding alone on sparse views (1-4 objects) for half the time, then co-training on dense tiles",
        (Phase(0.5, "sparse", step_share=0.6), Phase(0.5, "dense", step_share=0.4)),
    ),
    "localise-first+dense": Recipe(
        "localise-first+dense",
        "localise-first, with the dense head (training.dense_head) on the vision tokens throughout",
        (Phase(0.5, "sparse", ("dense_head_weight=1.0",)), Phase(0.5, "dense", ("dense_head_weight=1.0",))),
    ),
    # The first hypothesis of the issue: objects in token units. At the world's 0.3 m a small
    # vehicle is a quarter of a visual token; tiles of half the window, enlarged twice, make
    # objects span twice the tokens a side (the checkpoint then declares detection at 0.15 m,
    # training.demo_model.task_defaults, and the backend reads scenes at it: four times the
    # tiles per scene).
    "localise-first@2x": Recipe(
        "localise-first@2x",
        "localise-first on detection tiles of half the window enlarged twice (objects twice the pixels a side); probed on the same scenes at 2x",
        (Phase(0.5, "sparse", step_share=0.6), Phase(0.5, "dense", step_share=0.4)),
        view_zoom=2.0,
    ),
    # benchmarks/results/localisation_probe.md: with box answers alone the image tokens never
    # learn their column; training.position_head teaches it (mean best IoU twice as high there).
    "localise-first+position": Recipe(
        "localise-first+position",
        "localise-first, with the position head (training.position_head) on the image tokens throughout",
        (Phase(0.5, "sparse", ("position_head_weight=1.0",), step_share=0.6), Phase(0.5, "dense", ("position_head_weight=1.0",), step_share=0.4)),
    ),
    "cotrain+dense": Recipe("cotrain+dense", "cotrain, with the dense head on the vision tokens", (Phase(1.0, "dense", ("dense_head_weight=1.0",)),)),
    "localise-first+dense+deep": Recipe(
        "localise-first+dense+deep",
        "localise-first+dense with a deeper, wider language model (training.scratch size demo-deep)",
        (Phase(0.5, "sparse", ("dense_head_weight=1.0",)), Phase(0.5, "dense", ("dense_head_weight=1.0",))),
        size="demo-deep",
    ),
}


# What `make demo-model` trains (training.demo_model), chosen on the table in
# benchmarks/results/localisation_recipes.md: the lowest validation loss and 'where' at equal time.
# localise-first@2x learned 'where' faster in the 20-minute trials, but at full length in the
# 150-minute budget it gave no better 'where' and lost scene classification
# (benchmarks/results/localisation_full_length.md). The position head doubled the mean best IoU of
# box answers alone on the probe (benchmarks/results/localisation_probe.md), but at full length on
# the world it ended at the same 'where' (4.78 against 4.75 nats), so it is not shipped either;
# on a 5,000-step schedule box answers alone overtook it by 3,000 steps and more than tripled
# their own IoU from 1,500 to 5,000, still rising (benchmarks/results/localisation_curve.md): the
# sparse phase's steps are what binds, and 5,000 of them take 130 minutes of one core, nearly the
# whole budget; the baseline's smaller language model steps faster but learns less per minute
# (the same benchmark), so the next recipe to try runs on a GPU.
CHOSEN = "localise-first"


def phase_steps(recipe: Recipe, total_steps: int) -> list[int]:
    """A recipe's steps shared by its phases (`make demo-model` runs a fixed number of steps)."""
    return [max(1, round(total_steps * (phase.share if phase.step_share is None else phase.step_share))) for phase in recipe.phases]


def data_for(kind: str, plan: DemoDataPlan, work: Path) -> Path:
    """The dataset of one kind of phase data (at the plan's view zoom), made once and kept in
    the work folder."""
    folder = work / "data" / (kind if plan.view_zoom == 1 else f"{kind}-zoom{plan.view_zoom:g}")
    if not (folder / "manifest.json").is_file():
        build_demo_data(folder, plan, workers=os.cpu_count() or 1)
    else:
        check_demo_data(folder, plan)
    return folder


@dataclass
class PhaseRun:
    settings: dict
    log: list[dict] = field(default_factory=list)


def _fit(model: str, data: Path, val: Path, out: Path, overrides: list[str]) -> dict:
    from training.config import load_config, parse_overrides
    from training.fit import FitSettings, fit

    config = load_config(str(CONFIG), parse_overrides(overrides))
    return fit(FitSettings(model=model, data=str(data), out=str(out), config=config, val_data=str(val), overwrite=True))


def seconds_per_step(model: str, data: Path, val: Path, out: Path, overrides: list[str]) -> float:
    """A phase's training step time, timed over a few steps (the first, warming up, left out)."""
    _fit(model, data, val, out, overrides + [f"max_steps={CALIBRATION_STEPS}", "log_every=1", "val_ap_samples=0", "val_samples=1",
                                             "save_every=100000"])
    steps = [e for e in read_log(out) if "loss" in e]
    return (steps[-1]["elapsed_s"] - steps[1]["elapsed_s"]) / (len(steps) - 2)


def run_recipe(recipe: Recipe, minutes: float, work: Path) -> dict:
    """Every phase of a recipe in its share of `minutes`; the curve of each validation against
    the training seconds spent so far."""
    from training.data import message_texts
    from training.localisation import measure
    from training.scratch import build_checkpoint

    folder = work / recipe.name
    plan = replace(TRIAL_PLAN, view_zoom=recipe.view_zoom)
    val = data_for("dense", plan, work)
    model = str(build_checkpoint(folder / "scratch", recipe.size, seed=0, extra_corpus=message_texts(val / "train" / "conversations.jsonl")))
    curve, spent, phases = [], 0.0, []
    for number, phase in enumerate(recipe.phases, start=1):
        data = data_for(phase.data, phase_plan(phase.data, plan), work)
        out = folder / f"phase{number}"
        step_s = seconds_per_step(model, data, val, folder / f"calibration{number}", list(phase.overrides))
        steps = max(CALIBRATION_STEPS, int(minutes * 60 * phase.share / step_s))
        overrides = list(phase.overrides) + [f"max_steps={steps}", f"eval_every={max(1, steps // EVALUATIONS_PER_PHASE)}",
                                             f"warmup_steps={min(150, steps // 10)}", "val_samples=48", "val_ap_samples=24",
                                             "val_max_new_tokens=448", f"save_every={steps}"]
        started = time.monotonic()
        _fit(model, data, val, out, overrides)
        wall = time.monotonic() - started
        validation_s = 0.0
        for entry in read_log(out):
            if "val_loss" in entry:
                validation_s += entry.get("val_s", 0.0)
                curve.append({"phase": number, "step": entry["step"], "train_s": round(spent + entry["elapsed_s"] - validation_s, 1),
                              "val_loss": entry["val_loss"], "val_ap_nc": entry.get("val_ap_nc"), "val_ground_acc": entry.get("val_ground_acc")})
        spent += wall - validation_s
        phases.append({"data": phase.data, "overrides": list(phase.overrides), "steps": steps, "seconds_per_step": round(step_s, 3),
                       "wall_s": round(wall, 1), "validation_s": round(validation_s, 1)})
        model = str(out / "model")
    parts = measure(model, val, samples=48)
    return {"recipe": recipe.name, "description": recipe.description, "size": recipe.size, "view_zoom": recipe.view_zoom, "phases": phases, "curve": curve,
            "train_s": round(spent, 1), "final": curve[-1] if curve else None, "localisation": parts}


def markdown(results: list[dict], minutes: float, threads: int) -> str:
    lines = [
        "# Localisation recipes at equal wall time",
        "",
        f"Each recipe trained for {minutes:g} minutes of training ({threads} thread(s), `{platform.processor() or platform.machine()}`), "
        "validation time left out; all measured on the same probe (the trial data's validation split: dense tiles, every class "
        "asked; a recipe @2x on the same scenes in tiles of half the window, enlarged twice). `python -m training.recipes` "
        "(training/recipes.py) wrote this.",
        "",
        "| recipe | steps | val loss | AP_nc | grounding Acc@0.5 | where (nats/coord) | uniform | shape | what |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        final, parts = r["final"] or {}, r["localisation"]
        det, ground = parts.get("detect", {}), parts.get("ground", {})

        def f(value, digits=3):
            return "-" if value is None else f"{value:.{digits}f}"

        steps = "+".join(str(p["steps"]) for p in r["phases"])
        lines.append(f"| {r['recipe']} | {steps} | {f(final.get('val_loss'))} | {f(final.get('val_ap_nc'))} | {f(final.get('val_ground_acc'))} "
                     f"| {f(det.get('where_nats'), 2)} / {f(ground.get('where_nats'), 2)} | {f(det.get('uniform_where_nats'), 2)} "
                     f"| {f(det.get('shape_nats'), 2)} | {f(det.get('what_nats_per_object'), 2)} |")
    lines += ["", "where: detection / grounding. The curves (validation against training seconds) are in the JSON beside this file.", ""]
    for r in results:
        lines.append(f"- **{r['recipe']}**: {r['description']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of: {', '.join(RECIPES)}")
    parser.add_argument("--minutes", type=float, default=20.0, help="training minutes per recipe (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads (default 1: leaves the other core free)")
    parser.add_argument("--work", type=Path, default=Path("runs/recipes"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/localisation_recipes"), help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s): {', '.join(unknown)}")
    results_file = args.out.with_suffix(".json")
    results = json.loads(results_file.read_text())["recipes"] if results_file.is_file() else []
    for name in names:
        print(f"recipe {name}: {RECIPES[name].description}", file=sys.stderr, flush=True)
        results = [r for r in results if r["recipe"] != name] + [run_recipe(RECIPES[name], args.minutes, args.work)]
        document = {"minutes": args.minutes, "threads": args.threads, "machine": platform.platform(), "recipes": results,
                    "plans": {"dense": asdict(TRIAL_PLAN), "sparse": asdict(sparse_plan(TRIAL_PLAN))}}
        write_text(results_file, json.dumps(document, indent=2) + "\n")
        write_text(args.out.with_suffix(".md"), markdown(results, args.minutes, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

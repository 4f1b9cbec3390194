"""CPU training step of the demo-size model with OpenMP threads that spin while they wait
(OMP_WAIT_POLICY=ACTIVE, the effect of the runtime's default spin time) against threads that
sleep (PASSIVE, what `make demo-model` sets), on an idle machine and while other PyTorch
processes keep every core busy.

Each setting runs in its own process (the policy is read when the OpenMP runtime starts), with
as many threads as cores, on the same batches: eight 224 px detection-like samples (64 visual
tokens, about 300 tokens each). The competing load is one process per core doing small matrix
products in PyTorch with its default threads and wait policy, like the tests and servers that
shared the machine the demo checkpoint was trained on. Each figure is the median of the timed
steps after warm-up."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import report

STEP_SCRIPT = r"""
import json, sys, time, torch, numpy as np
from training.scratch import SIZES, build_model, build_tokenizer, build_processor
from backend.prompts import DETECTION_SYSTEM
tokenizer = build_tokenizer(1000)
processor = build_processor(tokenizer)
model = build_model(SIZES["demo"], tokenizer, 0)
answer = "\n".join(f"{100 + i},{20 + i},{130 + i},52,121,75,92,63 small vehicle" for i in range(5))
messages = [{"role": "system", "content": DETECTION_SYSTEM["polygon"]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "find the plane, ship, small vehicle."}]},
            {"role": "assistant", "content": answer}]
text = processor.apply_chat_template(messages, tokenize=False)
rng = np.random.default_rng(0)
images = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(8)]
batch = processor(text=[text] * 8, images=images, return_tensors="pt", padding=True)
batch["labels"] = batch["input_ids"].clone()
optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
times = []
for step in range(int(sys.argv[1])):
    start = time.perf_counter()
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    times.append(time.perf_counter() - start)
print(json.dumps({"threads": torch.get_num_threads(), "times": times}))
"""

BUSY_SCRIPT = r"""
import torch
a = torch.rand(160, 160)
while True:
    a = torch.tanh(a @ a)
"""


def _steps(policy: str, steps: int) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": str(os.cpu_count() or 1), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", STEP_SCRIPT, str(steps)], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(quick: bool = False) -> dict:
    steps, warmup = (5, 2) if quick else (12, 3)
    cores = os.cpu_count() or 1
    rows = []
    for load in ("idle", "busy"):
        busy = []
        if load == "busy":
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            busy = [subprocess.Popen([sys.executable, "-c", BUSY_SCRIPT], env=env) for _ in range(cores)]
            time.sleep(2)
        try:
            for policy in ("ACTIVE", "PASSIVE"):
                result = _steps(policy, steps)
                timed = result["times"][warmup:]
                rows.append({"machine": f"{load} ({len(busy)} busy processes)", "OMP_WAIT_POLICY": policy, "threads": result["threads"],
                             "step_s_median": statistics.median(timed), "step_s_min": min(timed), "steps": len(timed)})
        finally:
            for process in busy:
                process.kill()
                process.wait()
    by = {(r["machine"].split()[0], r["OMP_WAIT_POLICY"]): r["step_s_median"] for r in rows}
    summary = {
        "busy: ACTIVE / PASSIVE step time": by[("busy", "ACTIVE")] / by[("busy", "PASSIVE")],
        "idle: ACTIVE / PASSIVE step time": by[("idle", "ACTIVE")] / by[("idle", "PASSIVE")],
    }
    return report.write("omp_wait", "OpenMP wait policy: a CPU training step of the demo-size model, idle and under load", rows, summary,
                        __doc__.split("\n\n")[0].replace("\n", " "))


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

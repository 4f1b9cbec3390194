"""Supervision that is thrown away: a linear head that reads, from the language model's hidden
state of every image token a few layers in, which row and column of the token grid that token is.

Why: a box answer spells where an object is, so the answer tokens must read the position of the
image tokens that show it. Attention brings back what a token holds, not where it sits, so the
position has to be in the token's own state. A from-scratch Qwen2.5-VL does not have it there:
a ridge probe on the demo's random-init model finds each image token's row in its state after one
layer (R^2 0.78, the causal mask counts the tokens before it) but not its column (R^2 below 0),
and 1,500 steps of box answers did not teach it (benchmarks/results/localisation_probe.md). Asked
directly, one layer learns both within a hundred steps. It speeds the start, not the curve: twice
the probe's IoU after a 1,500-step schedule, but 3,000 and 5,000 steps into a longer one box
answers alone were ahead (benchmarks/results/localisation_curve.md). Used during training only;
the saved checkpoint is a plain Qwen2.5-VL without it.
"""

from __future__ import annotations

ATTRIBUTE = "position_head"  # the head's name on the model being trained; left out of what is saved
LAYER = 1  # decoder layers the image tokens pass before the head reads them
SCALE = 8.0  # tokens: row and column are regressed in units of a 224 px view's side


def grid_targets(image_grid_thw, merge_size: int = 2):
    """(tokens, 2) row and column of every merged image token of a batch, in the order the
    tokens stand in the text: image by image, row by row (Qwen2.5-VL's order)."""
    import torch

    parts = []
    for frames, height, width in image_grid_thw.tolist():
        rows, cols = height // merge_size, width // merge_size
        row, col = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        parts.append(torch.stack([row.flatten(), col.flatten()], dim=1).repeat(frames, 1))
    return torch.cat(parts).float() if parts else torch.zeros((0, 2))


def attach(model, layer: int = LAYER):
    """Put a position head on `model` (as its `position_head` module, so optimisers, checkpoints
    and distributed wrappers see it) and return it. While the model trains, each forward pass with
    images leaves the head's loss in `last_loss`."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    merge = config.vision_config.spatial_merge_size

    class PositionHead(torch.nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.linear = torch.nn.Linear(width, 2)
            self.image_tokens = None  # (mask, targets) of the forward pass under way
            self.last_loss = None

        def arm(self, module, args, kwargs) -> None:
            ids, grid = kwargs.get("input_ids"), kwargs.get("image_grid_thw")
            self.image_tokens = None
            if module.training and torch.is_grad_enabled() and ids is not None and grid is not None:
                self.image_tokens = (ids == config.image_token_id, grid_targets(grid, merge).to(ids.device))

        def capture(self, module, args, output) -> None:
            if self.image_tokens is None:
                return
            mask, targets = self.image_tokens
            self.image_tokens = None
            hidden = output[0] if isinstance(output, tuple) else output
            states = hidden[mask]
            if states.shape[0] != targets.shape[0]:
                raise RuntimeError(f"{targets.shape[0]} image tokens in the grids, {states.shape[0]} in the text")
            self.last_loss = torch.nn.functional.smooth_l1_loss(self.linear(states.float()), targets / SCALE)

    layers = base.model.language_model.layers
    if not 1 <= layer <= len(layers):
        raise ValueError(f"the position head reads after decoder layer 1..{len(layers)}, not {layer}")
    head = PositionHead(config.text_config.hidden_size).to(next(base.parameters()).device)
    base.model.register_forward_pre_hook(head.arm, with_kwargs=True)  # called with keywords by the generation head's forward
    layers[layer - 1].register_forward_hook(head.capture)
    setattr(model, ATTRIBUTE, head)
    return head


def column_r2(model, inputs: list) -> float:
    """How well a ridge probe reads each image token's column from its state after LAYER decoder
    layers: held-out R^2 (fitted on the first three quarters of the tokens of `inputs`, processor
    outputs of single-image prompts, scored on the rest; 0: nothing there, 1: all of it)."""
    import numpy as np
    import torch

    states, columns = [], []
    with torch.no_grad():
        for batch in inputs:
            hidden = model(**batch, output_hidden_states=True).hidden_states[LAYER][0]
            states.append(hidden[batch["input_ids"][0] == model.config.image_token_id].float().numpy())
            columns.append(grid_targets(batch["image_grid_thw"])[:, 1].numpy())
    x, y = np.concatenate(states), np.concatenate(columns)
    x = np.c_[(x - x.mean(0)) / (x.std(0) + 1e-6), np.ones(len(x))]
    fitted = np.arange(len(x)) < len(x) * 3 // 4
    weights = np.linalg.solve(x[fitted].T @ x[fitted] + np.eye(x.shape[1]), x[fitted].T @ y[fitted])
    residual = y[~fitted] - x[~fitted] @ weights
    return float(1 - (residual**2).sum() / ((y[~fitted] - y[~fitted].mean()) ** 2).sum())

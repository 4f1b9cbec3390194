"""A GPU profile of a 7B-shaped Qwen2.5-VL (Qwen2.5-VL-7B's configuration, random weights: no
download), for a machine with CUDA: prefill and decode time and peak memory for a 1008 x 1008
whole view and a 504 px detection tile, in bf16, 8-bit and 4-bit (bitsandbytes, vision tower
kept in bf16) when installed, and with sdpa against flash attention when flash-attn is
installed. `python -m benchmarks gpu` runs in a few minutes; without CUDA it says so and writes
nothing (CI has no GPU)."""

from __future__ import annotations

import importlib.util
import time

from benchmarks import report

# Qwen2.5-VL-7B-Instruct's config.json, as transformers reads it.
TEXT = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 128000, "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
          "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]}
VIEWS = {"whole view 1008 px": 1008, "detection tile 504 px": 504}
DECODE_TOKENS = 64


def build(quantize: str, attention: str):
    import torch
    from transformers import BitsAndBytesConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(text_config=TEXT, vision_config=VISION, image_token_id=151655, video_token_id=151656,
                              vision_start_token_id=151652, vision_end_token_id=151653)
    config._attn_implementation = attention
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: 15 GB, not 30 GB of fp32 first
    try:
        with torch.device("cuda"):
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    if quantize != "none":
        import tempfile

        skip = ["visual", "lm_head"]
        quantization = (BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip) if quantize == "8bit" else
                        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                                           llm_int8_skip_modules=skip))
        with tempfile.TemporaryDirectory(prefix="bench-gpu-") as folder:  # 15 GB of weights, gone once loaded
            model.save_pretrained(folder)
            del model
            torch.cuda.empty_cache()
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, quantization_config=quantization, device_map={"": 0},
                                                                       dtype=torch.bfloat16, attn_implementation=attention)
    return model.eval()


def inputs(side: int, device: str) -> dict:
    """One image of side x side pixels and a short prompt, as the processor would make them."""
    import torch

    grid = side // 14
    tokens = (grid // 2) ** 2
    ids = [151644, 872, 198, 151652] + [151655] * tokens + [151653, 100, 101, 102, 151645, 198, 151644, 77091, 198]
    pixels = torch.randn(grid * grid, 3 * 2 * 14 * 14, dtype=torch.bfloat16, device=device)
    return {"input_ids": torch.tensor([ids], device=device), "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=device),
            "pixel_values": pixels, "image_grid_thw": torch.tensor([[1, grid, grid]], device=device)}


def profile(model, side: int) -> dict:
    import torch

    batch = inputs(side, "cuda")
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=2, do_sample=False)  # warm up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        model(**batch)
        torch.cuda.synchronize()
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        out = model.generate(**batch, max_new_tokens=DECODE_TOKENS, min_new_tokens=DECODE_TOKENS, do_sample=False)
        torch.cuda.synchronize()
        total = time.perf_counter() - started
    generated = out.shape[1] - batch["input_ids"].shape[1]
    return {"visual_tokens": (side // 28) ** 2, "prefill_s": round(prefill, 4), "decode_ms_per_token": round(1000 * (total - prefill) / max(1, generated), 2),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def main(quick: bool = False) -> None:
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU on this machine; nothing measured (run it where there is one).")
        return
    quantizations = ["none"] + (["8bit", "4bit"] if importlib.util.find_spec("bitsandbytes") else [])
    attentions = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
    rows = []
    for quantize in quantizations[: 1 if quick else None]:
        for attention in attentions:
            model = build(quantize, attention)
            for view, side in VIEWS.items():
                rows.append({"weights": "bf16" if quantize == "none" else quantize, "attention": attention, "view": view, **profile(model, side)})
            del model
            torch.cuda.empty_cache()
    base = {r["view"]: r for r in rows if r["weights"] == "bf16" and r["attention"] == "sdpa"}
    for row in rows:
        row["decode_vs_bf16_sdpa"] = round(row["decode_ms_per_token"] / base[row["view"]]["decode_ms_per_token"], 2)
    report.write("gpu", f"A 7B-shaped Qwen2.5-VL on {torch.cuda.get_device_name()}", rows,
                 {"gpu": torch.cuda.get_device_name(), "decode tokens": DECODE_TOKENS}, __doc__.split("\n\n")[0].replace("\n", " "))


if __name__ == "__main__":
    main()

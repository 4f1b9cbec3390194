"""benchmarks/bench_gpu.py on a machine without CUDA (CI, this one): one line saying so, and no
result files, so a CPU run never leaves numbers that look like a GPU's."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_gpu, report


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA it runs the real profile (minutes), not this check")
def test_without_cuda_it_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    bench_gpu.main(quick=True)
    assert "no CUDA GPU on this machine; nothing measured" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_the_profiled_shape_is_qwen25_vl_7b():
    from transformers import Qwen2_5_VLConfig

    config = Qwen2_5_VLConfig(text_config=bench_gpu.TEXT, vision_config=bench_gpu.VISION)
    layers, hidden, vocab = config.text_config.num_hidden_layers, config.text_config.hidden_size, config.text_config.vocab_size
    inter, kv = config.text_config.intermediate_size, config.text_config.num_key_value_heads
    head = hidden // config.text_config.num_attention_heads
    text = layers * (2 * hidden * hidden + 2 * hidden * kv * head + 3 * hidden * inter) + 2 * vocab * hidden
    assert 7.0e9 < text < 7.7e9  # Qwen2.5-VL-7B's language model, embeddings and head included (7.6 B with the 0.7 B vision tower: 8.3 B)

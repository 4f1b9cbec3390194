"""Build a Qwen2.5-VL checkpoint from scratch: tokenizer, processor and randomly initialised model.

The result is a folder with the same files and classes as a released RSCoVLM checkpoint
(config.json, safetensors, tokenizer.json, preprocessor_config.json, chat_template), so the
backend loads it through the one `from_pretrained` path a real 7B model takes. Tests use the
tiny size; the demo checkpoint starts from a larger size and is then trained.

    python -m training.scratch --out resources/models/tiny-random [--size tiny] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

from backend.atomic import staged_folder
from backend.prompts import corpus_for_tokenizer
from backend.resolution import MAX_PIXELS, MIN_PIXELS

# Qwen2's pre-tokenisation: every digit is its own token, so coordinates are spelt digit by digit.
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Qwen2.5 marks tool calls with ordinary (non-special) added tokens; the Zoom-in Chain uses them.
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]

# Qwen2.5-VL's chat template: the default system message, images as
# <|vision_start|><|image_pad|><|vision_end|> (videos with <|video_pad|>), and the assistant
# header for generation.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class ModelSize:
    """Dimensions of a from-scratch Qwen2.5-VL. Vision patch/merge sizes are never changed:
    they define the 28-pixel token grid every RSCoVLM checkpoint shares."""

    vocab_size: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vision_intermediate: int
    # Rotary bases and the language model's temporal/height/width split of each head's rotary
    # frequencies (None: an even split). Qwen's 1e6 base suits 128-dim heads over long contexts;
    # a small head with that base leaves the width section (always the lowest frequencies) with
    # angles of 1e-4 rad across a whole image, i.e. no sense of where a token is.
    text_rope_theta: float = 1_000_000.0
    vision_rope_theta: float = 10_000.0
    mrope_section: tuple[int, int, int] | None = None


# The bundled demo checkpoint (training.demo_model): a few million parameters, sized so that
# a step of eight 224 px samples takes one to two seconds on two CPU cores.
DEMO = ModelSize(
    vocab_size=1000,
    text_hidden=256,
    text_layers=4,
    text_heads=4,
    text_kv_heads=2,
    text_intermediate=768,
    vision_hidden=192,
    vision_depth=4,
    vision_heads=4,
    vision_intermediate=512,
    text_rope_theta=20.0,
    vision_rope_theta=100.0,
    mrope_section=(4, 14, 14),
)


SIZES = {
    "tiny": ModelSize(
        vocab_size=600,
        text_hidden=64,
        text_layers=2,
        text_heads=4,
        text_kv_heads=2,
        text_intermediate=128,
        vision_hidden=32,
        vision_depth=2,
        vision_heads=2,
        vision_intermediate=64,
    ),
    "small": ModelSize(
        vocab_size=1200,
        text_hidden=256,
        text_layers=4,
        text_heads=4,
        text_kv_heads=2,
        text_intermediate=512,
        vision_hidden=128,
        vision_depth=4,
        vision_heads=4,
        vision_intermediate=256,
    ),
    "demo": DEMO,
    # The demo's vision tower with a deeper, wider language model (about 13M parameters, 52 MB):
    # whether reading a position off the image tokens and spelling it is short of capacity.
    "demo-deep": replace(DEMO, text_hidden=320, text_layers=8, text_heads=5, text_kv_heads=1, text_intermediate=960),
    # LOCALISATION_BASELINE's model (language model 4 layers x 192, the demo's vision tower; about
    # 4.6M parameters): whether the demo's wider language model is why it learns 'where' more slowly.
    "baseline": replace(DEMO, text_hidden=192, text_heads=3, text_kv_heads=1, text_intermediate=512),
}


def build_tokenizer(vocab_size: int, extra_corpus: list[str] | None = None):
    """A byte-level BPE trained with `tokenizers` on the task texts, wrapped as Qwen2Tokenizer.

    Byte level means any text can be encoded, so untrusted prompts never fail to tokenise."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer

    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = corpus_for_tokenizer() + list(extra_corpus or [])
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    wrapped = Qwen2Tokenizer(
        tokenizer_object=tokenizer,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    wrapped.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    wrapped.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    return wrapped


def build_processor(tokenizer):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        # frames get the images' range, as RSCoVLM's builder resizes them (not the video defaults)
        video_processor=Qwen2VLVideoProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}),
        chat_template=CHAT_TEMPLATE,
    )


def build_model(size: ModelSize, tokenizer, seed: int):
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = size.text_hidden // size.text_heads
    # mRoPE splits the rotary half of each head into temporal/height/width sections.
    half = head_dim // 2
    temporal = half // 4
    section = list(size.mrope_section or (temporal, (half - temporal) // 2, half - temporal - (half - temporal) // 2))
    if sum(section) != half:
        raise ValueError(f"mrope_section {section} must add up to half the head dimension, {half}")
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=size.text_hidden,
            intermediate_size=size.text_intermediate,
            num_hidden_layers=size.text_layers,
            num_attention_heads=size.text_heads,
            num_key_value_heads=size.text_kv_heads,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": size.text_rope_theta, "mrope_section": section},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=size.vision_depth,
            hidden_size=size.vision_hidden,
            intermediate_size=size.vision_intermediate,
            num_heads=size.vision_heads,
            out_hidden_size=size.text_hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[size.vision_depth - 1],
            rope_parameters={"rope_type": "axial", "rope_theta": size.vision_rope_theta},
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    return model


def build_checkpoint(out: Path, size: str = "tiny", seed: int = 0, extra_corpus: list[str] | None = None) -> Path:
    """Write a complete from-scratch checkpoint folder, atomically (a half-written folder never
    appears under `out`)."""
    dims = SIZES[size]
    tokenizer = build_tokenizer(dims.vocab_size, extra_corpus)
    processor = build_processor(tokenizer)
    model = build_model(dims, tokenizer, seed)
    with staged_folder(out) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "rscovlm_scratch.json").write_text(json.dumps({"size": size, "seed": seed, "trained": False}, indent=2) + "\n")
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_checkpoint(args.out, args.size, args.seed)
    print(f"wrote a randomly initialised {args.size} Qwen2.5-VL checkpoint to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

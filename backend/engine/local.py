"""The local engine: a Qwen2.5-VL checkpoint run by transformers in this process.

Loading goes through `from_pretrained` whether the checkpoint is RSCoVLM-7B from the hub or a
tiny test model on disk. The processor's pixel limits are set as MODEL_IO says and checked by
counting the visual tokens it produces, because setting them on the constructor alone does not
always reach the resize step.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import numpy as np

from backend.engine import Generation
from backend.engine.loading import DeviceChoice, Placement, Quantize, check_adapter, check_checkpoint, choose_placement
from backend.errors import UserError
from backend.model_defaults import ModelDefaults, model_defaults
from backend.prompts import Conversation
from backend.resolution import FACTOR, MAX_IMAGE_PIXELS, PATCH_SIZE, smart_resize


def chat_messages(conversation: Conversation) -> tuple[list[dict], list[np.ndarray], list[list[np.ndarray]]]:
    """Qwen chat-template messages, the images in the order their placeholders appear, and the
    videos (each a list of frames)."""
    messages, images, videos = [], [], []
    for message in conversation:
        if message.images or message.video:
            content = [{"type": "text", "text": message.lead}] if message.lead else []
            content += [{"type": "image"} for _ in message.images]
            content += [{"type": "video"}] if message.video else []
            content.append({"type": "text", "text": message.text})
            images.extend(message.images)
            if message.video:
                videos.append(list(message.video))
        else:
            content = message.text
        messages.append({"role": message.role, "content": content})
    return messages, images, videos


def video_metadata(video: list) -> dict:
    """As RSCoVLM's builder feeds frames: 2 frames a second, so one temporal patch is one second."""
    return {"total_num_frames": len(video), "fps": 2.0, "frames_indices": list(range(len(video)))}


def configure_pixel_limits(processor, min_pixels: int, max_pixels: int) -> None:
    """Set the limits where the resize step reads them, then prove it by token count."""
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if hasattr(image_processor, name):
            setattr(image_processor, name, value)
    video_processor = getattr(processor, "video_processor", None)
    if video_processor is not None:  # frames get the images' range, as RSCoVLM's builder resizes them
        video_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    # a side under the least (it must grow), and one over the most or, for a wide range, a
    # large view that must pass unchanged (a probe over 12.8 Mpx would cost seconds per load)
    for side in (int(np.sqrt(min_pixels)) // 2, min(int(np.sqrt(max_pixels)) * 2, 2016)):
        probe = np.zeros((side, side, 3), dtype=np.uint8)
        grid = image_processor(images=[probe], return_tensors="pt")["image_grid_thw"][0].tolist()
        expected = smart_resize(side, side, FACTOR, min_pixels, max_pixels)
        if grid[1] * PATCH_SIZE != expected[0] or grid[2] * PATCH_SIZE != expected[1]:
            raise RuntimeError(
                f"the processor resized a {side}x{side} image to {grid[1] * PATCH_SIZE}x{grid[2] * PATCH_SIZE} "
                f"instead of {expected[0]}x{expected[1]}: its pixel limits are not in effect"
            )


class LocalEngine:
    def __init__(
        self,
        model,
        processor,
        placement: Placement,
        model_id: str,
        batch_size: int,
        min_pixels: int,
        max_pixels: int,
        defaults: ModelDefaults | None = None,
    ):
        self.model = model
        self.processor = processor
        self.placement = placement
        self.model_id = model_id
        self.batch_size = max(1, int(batch_size))
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.defaults = defaults or ModelDefaults()
        self.generation_config = copy.deepcopy(model.generation_config)
        # Greedy, as RSCoVLM was evaluated; sampling settings shipped with a checkpoint would only warn.
        self.generation_config.do_sample = False
        self.generation_config.num_beams = 1
        for name in ("temperature", "top_p", "top_k"):
            setattr(self.generation_config, name, None)

    def describe(self) -> dict:
        import torch

        params = sum(p.numel() for p in self.model.parameters())
        memory = {}
        if self.placement.device == "cuda":
            memory = {
                "allocated_bytes": int(torch.cuda.memory_allocated()),
                "peak_bytes": int(torch.cuda.max_memory_allocated()),
            }
        else:
            import psutil

            memory = {"rss_bytes": int(psutil.Process(os.getpid()).memory_info().rss)}
        return {
            "model": self.model_id,
            "device": self.placement.device,
            "dtype": self.placement.dtype_name,
            "attention": self.placement.attention,
            "quantize": self.placement.quantize,
            "parameters": int(params),
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "memory": memory,
            "defaults": self.defaults.describe(),
        }

    def close(self) -> None:
        """Drop the weights now, so a replacement can be loaded into the same GPU memory."""
        import gc

        import torch

        self.model = None
        gc.collect()
        if self.placement.device == "cuda":
            torch.cuda.empty_cache()

    def _expected_grid(self, image: np.ndarray) -> tuple[int, int]:
        h, w = smart_resize(image.shape[0], image.shape[1], FACTOR, self.min_pixels, self.max_pixels)
        return h // PATCH_SIZE, w // PATCH_SIZE

    def _generate_batch(self, conversations: Sequence[Conversation], max_new_tokens: int, repetition_penalty: float | None) -> list[Generation]:
        import torch

        texts, images, videos, counts = [], [], [], []
        for conversation in conversations:
            messages, conv_images, conv_videos = chat_messages(conversation)
            texts.append(self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            images.extend(conv_images)
            videos.extend(conv_videos)
            counts.append((len(conv_images), len(conv_videos)))
        video_token = getattr(self.processor, "video_token", "<|video_pad|>")
        if videos and sum(text.count(video_token) for text in texts) != len(videos):
            raise UserError(
                f"The checkpoint's chat template writes no video ({video_token}), and two dates go to the model as a video of two frames.",
                "Use a checkpoint with Qwen2.5-VL's chat template (RSCoVLM's, the demo's), or copy that template into its chat_template.jinja.",
            )
        # frames arrive at their final size; the per-frame cap of qwen-vl-utils has nothing to cap
        extra = {"videos": videos, "video_metadata": [video_metadata(v) for v in videos], "cap_pixels_per_frame": False} if videos else {}
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt", **extra)
        image_tokens = self._checked_tokens(images, inputs.get("image_grid_thw"), "image")
        video_tokens = self._checked_tokens([v[0] for v in videos], inputs.get("video_grid_thw"), "video")
        inputs = inputs.to(self.model.device)
        config = copy.copy(self.generation_config)
        config.max_new_tokens = max_new_tokens
        if repetition_penalty is not None:
            config.repetition_penalty = repetition_penalty
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=config)
        prompt_length = inputs["input_ids"].shape[1]
        new = output[:, prompt_length:]
        decoded = self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        pad = self.processor.tokenizer.pad_token_id
        ends = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
        ended = torch.isin(new, torch.tensor([e for e in ends if e is not None], device=new.device)).any(dim=1).tolist()
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        results, image_cursor, video_cursor = [], 0, 0
        for row, (text, (image_count, video_count)) in enumerate(zip(decoded, counts)):
            new_tokens = int((new[row] != pad).sum())
            visual = sum(image_tokens[image_cursor : image_cursor + image_count]) + sum(video_tokens[video_cursor : video_cursor + video_count])
            results.append(Generation(text.strip(), int(prompt_tokens[row]), int(visual), new_tokens, bool(ended[row])))
            image_cursor, video_cursor = image_cursor + image_count, video_cursor + video_count
        return results

    def _checked_tokens(self, frames: list[np.ndarray], grids, what: str) -> list[int]:
        """Visual tokens of each image (or video, by its first frame), after checking the processor
        kept the size the coordinates refer to (a video's frames are merged in time, two by two)."""
        tokens = []
        for frame, (t, gh, gw) in zip(frames, grids.tolist() if grids is not None else []):
            if (gh, gw) != self._expected_grid(frame):
                raise RuntimeError(
                    f"the processor gave a {gh}x{gw} patch grid for a {frame.shape[1]}x{frame.shape[0]} {what}, "
                    f"not {self._expected_grid(frame)}: coordinates would not map back"
                )
            tokens.append(t * gh * gw // 4)
        return tokens

    def generate(self, conversations: Sequence[Conversation], max_new_tokens: int, repetition_penalty: float | None = None) -> list[Generation]:
        results: list[Generation] = []
        for start in range(0, len(conversations), self.batch_size):
            results.extend(self._generate_batch(conversations[start : start + self.batch_size], max_new_tokens, repetition_penalty))
        return results


def load_local_engine(
    model: str,
    adapter: str | None = None,
    device: DeviceChoice = "auto",
    quantize: Quantize = "none",
    batch_size: int = 4,
) -> LocalEngine:
    """The checkpoint ready to answer. Its processor never resizes what it is given (any image
    whose sides are multiples of 28 and whose area is under MAX_IMAGE_PIXELS passes as it is):
    views are read at their final size, and chat images are fitted into the model's trained
    range before they get here (backend.server.chat), so coordinates always refer to the
    pixels the caller holds."""
    source = check_checkpoint(model)
    adapter_path = check_adapter(adapter) if adapter else None
    defaults = model_defaults(model, adapter_path)  # a bad declaration is refused before the weights load
    placement = choose_placement(device, quantize)

    import torch
    from transformers import AutoProcessor, BitsAndBytesConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the caller shows one progress bar: the task's

    dtype = getattr(torch, placement.dtype_name)
    kwargs: dict = {"dtype": dtype, "attn_implementation": placement.attention}
    if quantize != "none":
        # The vision tower stays in bf16: quantising it costs accuracy for little memory.
        skip = ["visual", "lm_head"]
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
            if quantize == "8bit"
            else BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype,
                llm_int8_skip_modules=skip,
            )
        )
        kwargs["device_map"] = {"": 0}
    try:
        processor = AutoProcessor.from_pretrained(source)
        network_model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise UserError(
            f"could not load the model '{model}' ({str(exc).splitlines()[0]}).",
            "If it is a hub id, download it once where there is internet "
            f"(hf download {model} --local-dir models/{model.split('/')[-1]}) and pass that folder to --model.",
        ) from exc
    if quantize == "none":
        network_model = network_model.to(placement.device)
    if adapter_path:
        import warnings

        from peft import PeftModel

        with warnings.catch_warnings():
            # peft asks transformers about gradient checkpointing through a deprecated name;
            # nothing a user of the adapter can act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            network_model = PeftModel.from_pretrained(network_model, adapter_path)
    network_model.eval()
    processor.tokenizer.padding_side = "left"
    configure_pixel_limits(processor, FACTOR * FACTOR, MAX_IMAGE_PIXELS)
    model_id = model if not adapter_path else f"{model}+{adapter_path}"
    return LocalEngine(network_model, processor, placement, model_id, batch_size, FACTOR * FACTOR, MAX_IMAGE_PIXELS, defaults)

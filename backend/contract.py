"""The contract: what a task asks and what it answers. The CLI, the server and the plugin all
speak these models; the plugin codes against their JSON schema.

Results are GeoJSON FeatureCollections in the raster's CRS, with the CRS named both in `crs`
(EPSG code or WKT) and in the GeoJSON 2008 `crs` member that QGIS and GDAL read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backend.resolution import DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE, MAX_IMAGE_PIXELS, MAX_PIXELS, MIN_PIXELS

Task = Literal["detect", "ground", "caption", "classify", "ask", "describe", "change", "change_caption"]
TASKS: tuple[str, ...] = ("detect", "ground", "caption", "classify", "ask", "describe", "change", "change_caption")
CHANGE_TASKS = ("change", "change_caption")  # two rasters of the same place: `raster` the earlier, `raster_after` the later
# Answer limits by task when a request sets none. A detection line is ~30 tokens (Qwen spells
# every digit): 4096 holds ~130 objects, more than a dense 504 px tile of a parking lot (the
# reference evaluator allowed 16384; benchmarks/results/answer_limit.md measures the cost).
DEFAULT_MAX_NEW_TOKENS = {"detect": 4096, "ground": 64, "caption": 128, "classify": 32, "ask": 64, "describe": 128, "change": 2048,
                          "change_caption": 128}
MAX_NEW_TOKENS = 16384
MAX_REGIONS = 1000  # regions one describe request may ask about


class TaskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tile_size: int = Field(DEFAULT_TILE_SIZE, ge=56, le=4096, description="detection tile side, pixels at the working GSD")
    tile_overlap: int | None = Field(
        None, ge=0, description=f"overlap of neighbouring detection tiles, pixels; default: a quarter of the tile, at most {DEFAULT_TILE_OVERLAP}"
    )
    gsd: float | None = Field(None, gt=0, description="resample to this many metres per pixel; default: native")
    bands: list[int] | None = Field(None, description="1-based band numbers: one (grey) or three (R,G,B)")
    box_form: Literal["polygon", "rbox", "hbox"] | None = Field(
        None, description="answer form asked for; default: polygon for detection, hbox (a box) for grounding, which also takes polygon"
    )
    nms_iou: float = Field(0.1, ge=0.0, le=1.0, description="rotated NMS IoU across tiles (DOTA merge: 0.1)")
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=MAX_NEW_TOKENS,
        description="answer length limit, tokens; default: " + ", ".join(f"{n} for {t}" for t, n in DEFAULT_MAX_NEW_TOKENS.items()),
    )
    min_pixels: int = Field(MIN_PIXELS, ge=28 * 28, le=MAX_IMAGE_PIXELS, description="pixel budget of a view, least; default: the model's trained range")
    max_pixels: int = Field(MAX_PIXELS, ge=28 * 28, le=MAX_IMAGE_PIXELS, description="pixel budget of a view, most; default: the model's trained range")
    zoom: Literal["auto", "on", "off"] = Field(
        "auto", description="Zoom-in Chain for ask (the only task it was trained on); auto: when the extent exceeds the pixel budget by zoom_factor"
    )
    zoom_factor: float = Field(4.0, gt=1.0, description="auto zooms when extent pixels > zoom_factor x max_pixels")
    zoom_steps: int = Field(1, ge=0, le=8, description="zoom steps allowed after the first")
    zoom_counting: bool = Field(False, description="zoom for counting questions too (not trained: off by default)")
    change_kinds: list[Literal["changed", "appeared", "disappeared"]] = Field(
        ["changed"], min_length=1, description="change: what to find per class: changed (TEOChat's S2Looking question), appeared, disappeared"
    )

    @model_validator(mode="after")
    def _consistent(self) -> TaskOptions:
        if self.tile_overlap is not None and self.tile_overlap >= self.tile_size:
            raise ValueError(f"tile_overlap ({self.tile_overlap}) must be smaller than tile_size ({self.tile_size})")
        if self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        return self


class TaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Task
    raster: str = Field(description="path of the raster file as the backend sees it")
    extent: tuple[float, float, float, float] | None = Field(None, description="xmin, ymin, xmax, ymax; default: whole raster")
    extent_crs: str | None = Field(None, description="CRS of the extent (EPSG:xxxx, WKT, PROJ); default: the raster's")
    classes: list[str] | None = None
    expression: str | None = None
    question: str | None = None
    choices: list[str] | None = Field(None, description="ask: answer choices (multiple choice), bare or lettered '(A) x'; at most five")
    raster_after: str | None = Field(None, description="change tasks: the later raster of the same place (any CRS, resolution, extent)")
    regions: list[tuple[float, float, float, float]] | None = Field(
        None, max_length=MAX_REGIONS, description="describe: xmin, ymin, xmax, ymax of each feature to describe, in extent_crs (default: the raster's)"
    )
    options: TaskOptions = Field(default_factory=TaskOptions)

    @field_validator("classes")
    @classmethod
    def _clean_classes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = list(dict.fromkeys(c.strip() for c in value if c and c.strip()))
        return cleaned

    @model_validator(mode="after")
    def _task_inputs(self) -> TaskRequest:
        if self.task in CHANGE_TASKS and not (self.raster_after and self.raster_after.strip()):
            raise ValueError(f"task '{self.task}' needs raster_after, the later raster of the same place")
        if self.task in ("detect", "classify", "change") and not self.classes:
            raise ValueError(f"task '{self.task}' needs a non-empty list of classes")
        if self.task == "ground" and not (self.expression and self.expression.strip()):
            raise ValueError("task 'ground' needs an expression (what to find)")
        if self.task == "ask" and not (self.question and self.question.strip()):
            raise ValueError("task 'ask' needs a question")
        if self.choices is not None and not 2 <= len([c for c in self.choices if c.strip()]) <= 5:
            raise ValueError("choices must be two to five non-empty answers")
        if self.task == "describe" and not self.regions:
            raise ValueError("task 'describe' needs regions (the boxes of the features to describe)")
        if self.regions and any(not (x0 < x1 and y0 < y1) for x0, y0, x1, y1 in self.regions):
            raise ValueError("every region must be xmin, ymin, xmax, ymax with xmin < xmax and ymin < ymax")
        form = self.options.box_form
        if form is not None and self.task == "ground" and form == "rbox":
            raise ValueError("grounding answers a box (hbox) or a polygon, not rbox")
        return self


class Feature(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: dict[str, Any]
    properties: dict[str, Any]


class SkippedLine(BaseModel):
    view: int
    line: str
    reason: str


class TaskStats(BaseModel):
    views: int = 0
    views_skipped_nodata: int = 0
    visual_tokens: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    boxes_parsed: int = 0
    boxes_merged_away: int = 0
    boxes_not_requested: int = Field(0, description="boxes of trained classes the prompt listed but the request did not ask for")
    views_skipped_no_overlap: int = Field(0, description="change: views the later raster has no pixels in")
    views_truncated: int = Field(0, description="views whose answer stopped at the answer limit (max_new_tokens) instead of ending")
    lines_skipped: int = 0
    skipped: list[SkippedLine] = Field(default_factory=list, description="first skipped lines, for diagnosis")


class RasterInfo(BaseModel):
    path: str
    width: int
    height: int
    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    window: tuple[int, int, int, int] = Field(description="col_off, row_off, width, height of the extent in pixels")


class ZoomTurn(BaseModel):
    """One exchange of the Zoom-in Chain: the image shown, what was said, what it cost."""

    turn: int = Field(description="1 for the overview, then one per image shown after it")
    image: Literal["overview", "zoom", "repeat"] = Field(
        description="what this turn showed: the whole extent, a zoomed window, or the previous image again after an unusable call"
    )
    window: tuple[float, float, float, float] = Field(description="col_off, row_off, width, height in raster pixels")
    image_size: tuple[int, int] = Field(description="width, height of the image shown, pixels")
    user: str = Field(description="the user text of this turn")
    answer: str = Field(description="what the model said")
    image_tokens: int = Field(description="visual tokens of the image this turn added")
    visual_tokens: int = Field(description="visual tokens the engine processed for this turn (every image so far)")
    prompt_tokens: int = 0
    new_tokens: int = 0
    pixels_read: int = Field(description="pixels decoded from the raster for this turn's image (0 when reused)")
    zoom_box: tuple[float, float, float, float] | None = Field(
        None, description="the box the answer asked to zoom into, x1, y1, x2, y2 in this turn's image pixels"
    )
    note: str | None = Field(None, description="why the call could not be used, or how its box was adjusted")


class BruteForceCost(BaseModel):
    """Answering on every native-resolution tile of the extent instead, for comparison."""

    tiles: int
    tile_size: int = Field(description="tile side, working pixels: the largest square inside the pixel budget")
    visual_tokens: int
    pixels_read: int


class ZoomTrace(BaseModel):
    """Whether and how the Zoom-in Chain ran, the whole conversation, and its cost."""

    mode: Literal["auto", "on", "off"]
    zoomed: bool = Field(description="whether the chain ran (else one answer on the whole view)")
    reason: str = Field(description="why it ran or did not")
    max_steps: int = Field(description="zoom steps allowed: 1 + zoom_steps")
    steps: int = Field(0, description="zoomed windows read")
    outcome: Literal["not run", "answered after zooming", "answered without zooming", "fell back", "step bound", "no data"] = (
        "not run"
    )
    system: str | None = Field(None, description="the system prompt (the tool description)")
    turns: list[ZoomTurn] = Field(default_factory=list)
    visual_tokens: int = Field(0, description="sum over turns")
    pixels_read: int = Field(0, description="sum over turns")
    brute_force: BruteForceCost | None = None


class TaskResult(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    task: Task
    model: str
    crs: str | None = Field(description="the raster's CRS: 'EPSG:xxxx' or WKT; null when it has none")
    features: list[Feature] = Field(default_factory=list)
    text: str | None = Field(None, description="caption, class or answer for the text tasks")
    raster: RasterInfo
    raster_after: RasterInfo | None = Field(None, description="change tasks: the later raster (its window is the earlier's grid)")
    stats: TaskStats = Field(default_factory=TaskStats)
    warnings: list[str] = Field(default_factory=list)
    zoom: ZoomTrace | None = Field(None, description="ask/ground: the Zoom-in Chain's decision, conversation and accounting")

    def geojson(self) -> dict[str, Any]:
        """A plain GeoJSON FeatureCollection naming its CRS (GeoJSON 2008 `crs` member)."""
        collection: dict[str, Any] = {"type": "FeatureCollection", "features": [f.model_dump() for f in self.features]}
        if self.crs:
            name = f"urn:ogc:def:crs:EPSG::{self.crs.split(':', 1)[1]}" if self.crs.startswith("EPSG:") else self.crs
            collection["crs"] = {"type": "name", "properties": {"name": name}}
        return collection


# --- The local service (`rscovlm serve`): jobs, uploads, health, model, chat completions ---

JobState = Literal["queued", "running", "done", "failed", "cancelled"]


class ErrorResponse(BaseModel):
    detail: str = Field(description="one line naming the problem and the fix")


class JobProgress(BaseModel):
    done: int = Field(description="views (tiles) answered so far")
    total: int = Field(description="views (tiles) the job was planned into")


class JobCreated(BaseModel):
    id: str
    state: JobState
    progress: JobProgress
    url: str = Field(description="where to poll: GET this path for the job's status")


class JobSummary(BaseModel):
    id: str
    task: Task
    state: JobState
    progress: JobProgress
    submitted: float = Field(description="Unix time the job was accepted")
    started: float | None = None
    finished: float | None = None
    error: str | None = Field(None, description="why the job failed or was cancelled")


class JobStatus(JobSummary):
    crs: str | None = Field(None, description="CRS of `features`: the raster's")
    features: list[Feature] = Field(
        default_factory=list, description="features merged from the views answered so far; empty once `result` is set"
    )
    result: TaskResult | None = Field(None, description="the whole answer, once the job is done")


class RasterUpload(BaseModel):
    id: str
    raster: str = Field(description="the uploaded file as the server sees it: pass it as TaskRequest.raster")
    bytes: int


class ModelDefaultsInfo(BaseModel):
    """What a request gets for the options it leaves unset: the checkpoint's declarations
    (rscovlm_task_defaults.json), then MODEL_IO's defaults."""

    options: TaskOptions = Field(description="every task option as a request that sets none of them gets it")
    declared: list[str] = Field(default_factory=list, description="the options the checkpoint (or its adapter) declares")
    tasks: dict[str, dict[str, Any]] = Field(default_factory=dict, description="options declared for one task only, over `options`")
    classes: list[str] = Field(description="the detection classes the model was trained on (DOTA-v1.0's unless it declares its own)")
    sources: list[str] = Field(default_factory=list, description="the files the declarations come from")


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    engine: Literal["local", "remote"] = "local"
    batch_size: int
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None
    memory: dict[str, Any] = Field(default_factory=dict, description="bytes: GPU allocated/peak, or the process's RSS")
    defaults: ModelDefaultsInfo | None = Field(None, description="the options and classes requests get from this model")


class Health(BaseModel):
    status: Literal["ok", "stopping"]
    version: str
    model: str
    jobs: dict[str, int] = Field(description="jobs kept, by state")
    batches: int = Field(description="engine batches run since start")
    views: int = Field(description="views (tiles, chat turns) answered since start")
    engine_reloads: int = Field(description="times a crashed engine was loaded again")


class ChatImageUrl(BaseModel):
    url: str = Field(description="data:image/png;base64,... (or jpeg); the server fetches nothing")


class ChatVideoUrl(BaseModel):
    url: str = Field(description="data:video/jpeg;base64,<frame>,<frame>...: the frames of one place in time order, as vLLM takes them")


class ChatContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "image_url", "video_url"]
    text: str | None = None
    image_url: ChatImageUrl | None = None
    video_url: ChatVideoUrl | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[ChatContentPart]


class ChatStreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat-completions request, as far as a greedy VLM uses it; other fields that
    OpenAI clients send are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(None, description="ignored: decoding is greedy, as RSCoVLM was evaluated")
    n: int = Field(1, ge=1, le=1)
    stream: bool = Field(False, description="answer as server-sent events (chat.completion.chunk), as OpenAI streams")
    stream_options: ChatStreamOptions | None = None


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    finish_reason: Literal["stop", "length"]


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rscovlm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- Training jobs: `rscovlm train export | fit | grpo` run by the service in a child process ---

TrainingKind = Literal["export", "fit", "grpo"]
TrainingState = Literal["queued", "running", "cancelling", "done", "failed", "cancelled"]


class ExportTrainingOptions(BaseModel):
    """`rscovlm train export`'s options, with its defaults."""

    model_config = ConfigDict(extra="forbid")

    tile_size: int = Field(DEFAULT_TILE_SIZE, ge=56, le=4096, description="tile side, pixels at the working GSD (as detection)")
    tile_overlap: int = Field(DEFAULT_TILE_OVERLAP, ge=0, description="overlap of neighbouring tiles, pixels")
    gsd: float | None = Field(None, gt=0, description="resample to this many metres per pixel; default: native")
    bands: list[int] | None = Field(None, description="1-based band numbers: one (grey) or three (R,G,B)")
    min_visible: float = Field(0.5, gt=0.0, le=1.0, description="keep an object cut by a tile edge when this share of it is inside")
    keep_empty: float = Field(0.25, ge=0.0, le=1.0, description="share of tiles without objects to keep")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of spatial blocks held out for validation")
    block_size: int = Field(2048, ge=56, description="side of a split block, pixels at the working GSD")
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> ExportTrainingOptions:
        if self.tile_overlap >= self.tile_size:
            raise ValueError(f"tile_overlap ({self.tile_overlap}) must be smaller than tile_size ({self.tile_size})")
        if self.block_size < self.tile_size:
            raise ValueError(f"block_size ({self.block_size}) must be at least tile_size ({self.tile_size})")
        return self


class ExportTrainingRequest(BaseModel):
    """A raster and its labelled polygons -> a dataset folder (docs/DATASET.md), as `rscovlm train export`."""

    model_config = ConfigDict(extra="forbid")

    raster: str = Field(description="the imagery as the backend sees it (a path, or RasterUpload.raster)")
    labels: str = Field(description="polygon layer file as the backend sees it (a path, or VectorUpload.labels), any CRS")
    layer: str | None = Field(None, description="layer inside `labels`; default: the first")
    class_field: str | None = Field(None, description="field holding each object's class")
    class_name: str | None = Field(None, description="one class for every object (instead of class_field)")
    text_field: str | None = Field(None, description="field with a referring expression: adds grounding samples")
    caption_field: str | None = Field(None, description="field with a description of the object: adds region-caption samples")
    extent: tuple[float, float, float, float] | None = Field(None, description="xmin, ymin, xmax, ymax; default: the whole raster")
    extent_crs: str | None = Field(None, description="CRS of the extent; default: the raster's")
    out: str = Field(description="dataset folder to write, on the backend's machine")
    overwrite: bool = Field(False, description="replace an earlier export in `out`")
    options: ExportTrainingOptions = Field(default_factory=ExportTrainingOptions)

    @model_validator(mode="after")
    def _one_class_source(self) -> ExportTrainingRequest:
        if (self.class_field is None) == (self.class_name is None):
            raise ValueError("give either class_field (a field holding each object's class) or class_name (one class for all)")
        return self


class FitTrainingRequest(BaseModel):
    """Fine-tune on a data mixture, as `rscovlm train fit`; the same request again resumes the run."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="base checkpoint folder on the backend's machine, or a hub id")
    data: str = Field(description='data spec: dataset folders or files with *K (repeat) or %P (keep percent), e.g. "data/boats*3,data/general%20"')
    out: str = Field(description="run folder on the backend's machine: checkpoints, log, adapter/ or model/")
    config: str = Field("lora", description="a shipped config (lora, full) or a YAML file on the backend's machine")
    method: Literal["lora", "qlora", "full"] | None = Field(None, description="overrides the config's method")
    val_data: str | None = Field(None, description="validation data spec; default: the val split of the `data` datasets")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; default: the config's")
    seed: int | None = None
    merge: bool = Field(False, description="LoRA: also write the adapter merged into a full checkpoint (merged/)")
    overrides: list[str] = Field(default_factory=list, description="config keys as key=value, like `--set`, e.g. lora_r=8")
    overwrite: bool = Field(False, description="start over even if `out` holds another run")


class GrpoTrainingRequest(BaseModel):
    """Reinforcement fine-tuning with task rewards, as `rscovlm train grpo`; the same request again resumes the run."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="base checkpoint folder on the backend's machine, or a hub id")
    adapter: str | None = Field(None, description="an SFT adapter (a fit's adapter/): merged into the base first, the KL reference")
    data: str = Field(description="data spec, as fit: dataset folders or files with *K or %P; detect, ground, classify, vqa and caption samples are rewarded")
    out: str = Field(description="run folder on the backend's machine: checkpoints, log, adapter/")
    config: str = Field("grpo", description="the shipped config (grpo) or a YAML file on the backend's machine")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; default: the config's")
    merge: bool = Field(False, description="also write the adapter merged into a full checkpoint (merged/)")
    overrides: list[str] = Field(default_factory=list, description="config keys as key=value, like `--set`, e.g. beta=0.0")
    overwrite: bool = Field(False, description="start over even if `out` holds another run")


class TrainingProgress(BaseModel):
    done: int = Field(0, description="tiles written (export) or optimizer steps taken (fit, grpo)")
    total: int = Field(0, description="tiles planned or steps of the run; 0 until known")
    unit: Literal["tiles", "steps"]
    epoch: int | None = None
    loss: float | None = Field(None, description="training loss of the latest step")
    learning_rate: float | None = None
    val_loss: float | None = Field(None, description="latest validation loss per answer token")
    val_ap_nc: float | None = Field(None, description="latest validation AP_nc of detection answers")
    reward: float | None = Field(None, description="grpo: the latest step's mean weighted reward")
    rewards: dict[str, float] | None = Field(None, description="grpo: the latest step's mean reward per task, and 'format'")


class TrainingOutputs(BaseModel):
    """Folders a training job wrote, on the backend's machine."""

    dataset: str | None = Field(None, description="export: the dataset folder")
    run: str | None = Field(None, description="fit: the run folder")
    adapter: str | None = Field(None, description="fit, LoRA: the adapter (rscovlm detect --adapter)")
    model: str | None = Field(None, description="fit, full: the checkpoint folder (--model)")
    merged: str | None = Field(None, description="fit with merge: the adapter merged into a checkpoint")
    checkpoint: str | None = Field(None, description="fit: the newest complete checkpoint (a cancelled run resumes from it)")


class TrainingJobStatus(BaseModel):
    id: str
    kind: TrainingKind
    state: TrainingState = Field(description="cancelling: stopping after the step in flight (fit: writing a checkpoint)")
    progress: TrainingProgress
    submitted: float = Field(description="Unix time the job was accepted")
    started: float | None = None
    finished: float | None = None
    error: str | None = Field(None, description="why the job failed, or where a cancelled one stopped")
    outputs: TrainingOutputs = Field(default_factory=TrainingOutputs)
    result: dict[str, Any] | None = Field(None, description="once done: the dataset's manifest (export) or the run's metrics (fit, grpo)")


class VectorUpload(BaseModel):
    id: str
    labels: str = Field(description="the uploaded file as the server sees it: pass it as ExportTrainingRequest.labels")
    bytes: int
    layers: list[str] = Field(description="the layers GDAL finds in it")


# --- Model folders: the models the backend can use, downloads from the hub, deleting one ---

ModelKind = Literal["checkpoint", "adapter", "partial"]
DownloadState = Literal["queued", "running", "done", "failed", "cancelled"]


class ModelFolderInfo(BaseModel):
    name: str = Field(description="the folder's name in the models folder: what DELETE /models/{name} takes")
    path: str = Field(description="the folder on the backend's machine: what --model (or the plugin's Model setting) takes")
    kind: ModelKind = Field(description="a Qwen2.5-VL checkpoint, a LoRA adapter, or a download that stopped part way")
    size_bytes: int
    classes: list[str] = Field(description="the detection classes it was trained on (its declaration, else DOTA-v1.0's); empty when unknown")
    source: str | None = Field(None, description="hub-id@commit it was downloaded from")
    in_use: bool = Field(False, description="the model this backend runs")


class DownloadProgress(BaseModel):
    done: int = Field(0, description="bytes on disk so far")
    total: int = Field(0, description="bytes of every file of the repository; 0 until listed")


class ModelDownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo_id: str = Field(max_length=200, description="the hub id, e.g. Qingyun/RSCoVLM-7B-2512")
    revision: str | None = Field(None, max_length=200, description="branch, tag or commit; default main")
    token: str | None = Field(None, max_length=400, description="a hub token for a gated or private model; default the backend's (HF_TOKEN or a stored login)")


class ModelDownloadStatus(BaseModel):
    id: str
    repo_id: str
    state: DownloadState
    progress: DownloadProgress
    url: str = Field(description="where to poll; DELETE it to cancel")
    submitted: float
    finished: float | None = None
    error: str | None = None
    model: ModelFolderInfo | None = Field(None, description="the folder it made, once done")


class ModelFolders(BaseModel):
    folder: str = Field(description="the models folder on the backend's machine (serve --models-dir)")
    models: list[ModelFolderInfo]
    downloads: list[ModelDownloadStatus] = Field(description="downloads queued, running, or ended within the result TTL")

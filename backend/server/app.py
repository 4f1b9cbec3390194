"""The HTTP routes of `rscovlm serve`. Every body in and out is a model of `backend.contract`,
so resources/openapi.json is the whole contract the plugin codes against.

Errors are JSON `{"detail": "<one line: the problem and the fix>"}`: 400 bad input (the same
text the CLI prints), 422 a body that does not fit the schema, 401 token, 403 Host, 404 unknown
job, 409 result asked too early, 413 body too large, 503 queue full or stopping (or, for the
training routes, a backend installed without the `training` package).
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from backend import __version__
from backend.contract import (
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    ExportTrainingRequest,
    FitTrainingRequest,
    GrpoTrainingRequest,
    Health,
    JobCreated,
    JobProgress,
    JobStatus,
    JobSummary,
    ModelCard,
    ModelInfo,
    ModelList,
    RasterUpload,
    TaskOptions,
    TaskRequest,
    TrainingJobStatus,
    VectorUpload,
)
from backend.errors import Cancelled, UserError, validation_problem
from backend.server.chat import TooMuchImage, completion, conversation_from_request, max_tokens, stream_events
from backend.server.jobs import Scheduler, ServiceBusy, TaskJob
from backend.server.model_downloads import ModelDownloads
from backend.server.model_routes import model_routes
from backend.server.security import Guard, GuardSettings
from backend.server.training_jobs import TrainingJob, TrainingJobs, training_installed
from backend.server.uploads import Uploads

COMMON_ERRORS = {
    401: {"model": ErrorResponse, "description": "no bearer token, or a wrong one"},
    403: {"model": ErrorResponse, "description": "the Host header is not the server's address"},
    413: {"model": ErrorResponse, "description": "the body is over the route's limit"},
}


def _error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    if errors and errors[0].get("type") == "json_invalid":
        reason = (errors[0].get("ctx") or {}).get("error", "JSON decode error")
        return _error(400, f"the request body is not valid JSON ({reason} at character {errors[0]['loc'][-1]}). Send a JSON object.")
    return _error(422, validation_problem(errors) + " See resources/openapi.json for the request's schema.")


def create_app(
    scheduler: Scheduler | None = None,
    uploads: Uploads | None = None,
    guard: GuardSettings | None = None,
    training: TrainingJobs | None = None,
    served_model_name: str | None = None,
    models: ModelDownloads | None = None,
) -> FastAPI:
    """The app; with no scheduler it only serves to export the OpenAPI schema. The OpenAI routes
    name the model `served_model_name` (default: the model's own id)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if scheduler is not None:
            scheduler.start()
        if training is not None:
            training.start()
        if models is not None:
            models.start()
        try:
            yield
        finally:
            if models is not None:
                await run_in_threadpool(models.stop)
            if training is not None:
                await run_in_threadpool(training.stop)
            if scheduler is not None:
                await run_in_threadpool(scheduler.stop)
            if uploads is not None:
                uploads.remove_all()

    app = FastAPI(
        title="RSCoVLM local service",
        version=__version__,
        description="Ask RSCoVLM about a raster; answers come back as GeoJSON FeatureCollections in the raster's CRS.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        responses=COMMON_ERRORS,
    )
    if guard is not None:
        app.add_middleware(Guard, settings=guard)

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(UserError, lambda request, exc: _error(400, str(exc)))
    app.add_exception_handler(TooMuchImage, lambda request, exc: _error(413, str(exc)))
    app.add_exception_handler(ServiceBusy, lambda request, exc: _error(503, str(exc), {"Retry-After": "5"}))

    def jobs() -> Scheduler:
        if scheduler is None:
            raise HTTPException(503, "this app was built without a model (schema export only).")
        return scheduler

    def find(job_id: str) -> TaskJob:
        job = jobs().get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}: never submitted, or finished more than {jobs().result_ttl_s:g} s ago and dropped.")
        return job

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        s = jobs()
        return Health(
            status="stopping" if s.stopping else "ok",
            version=__version__,
            model=s.engine.model_id,
            jobs=s.counts(),
            batches=s.batches,
            views=s.views,
            engine_reloads=s.engine_reloads,
        )

    @app.get("/model", response_model=ModelInfo, tags=["service"])
    def model() -> ModelInfo:
        engine = jobs().engine
        return ModelInfo(**{"batch_size": engine.batch_size, **engine.describe()})

    @app.post(
        "/rasters",
        response_model=RasterUpload,
        status_code=201,
        tags=["rasters"],
        responses={400: {"model": ErrorResponse}},
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
        },
    )
    async def upload_raster(request: Request, name: str | None = None) -> RasterUpload:
        """Send a raster's bytes as the body; `raster` in the answer goes into TaskRequest.raster."""
        if uploads is None:
            raise HTTPException(503, "this server takes no uploads.")
        return await uploads.save(request.stream(), name)

    @app.delete("/rasters/{upload_id}", status_code=204, tags=["rasters"], responses={404: {"model": ErrorResponse}})
    def delete_raster(upload_id: str) -> Response:
        if uploads is None or not uploads.delete(upload_id):
            raise HTTPException(404, f"no uploaded raster {upload_id}.")
        return Response(status_code=204)

    @app.post(
        "/jobs",
        response_model=JobCreated,
        status_code=202,
        tags=["jobs"],
        responses={400: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    )
    def submit(request: TaskRequest) -> JobCreated:
        """Plan the job (bad input is refused here) and queue it; answers at once."""
        job = jobs().submit(request)
        summary = job.summary()
        return JobCreated(id=job.id, state=summary.state, progress=summary.progress, url=f"/jobs/{job.id}")

    @app.get("/jobs", response_model=list[JobSummary], tags=["jobs"])
    def list_jobs() -> list[JobSummary]:
        return [job.summary() for job in jobs().list()]

    @app.get("/jobs/{job_id}", response_model=JobStatus, tags=["jobs"], responses={404: {"model": ErrorResponse}})
    def status(job_id: str) -> JobStatus:
        """State, progress, the features merged so far, and the result once done."""
        return find(job_id).status()

    @app.get("/jobs/{job_id}/geojson", tags=["jobs"], responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
    def geojson(job_id: str) -> dict:
        """The result as a plain GeoJSON FeatureCollection naming its CRS (for GDAL and QGIS)."""
        job = find(job_id)
        result = job.status().result
        if result is None:
            raise HTTPException(409, f"job {job_id} is {job.state}; its result exists once the state is done.")
        return result.geojson()

    @app.delete("/jobs/{job_id}", response_model=JobStatus, tags=["jobs"], responses={404: {"model": ErrorResponse}})
    def cancel(job_id: str) -> JobStatus:
        """Cancel a queued or running job (it stops after the batch in flight); a finished job is dropped."""
        job = jobs().cancel(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}.")
        return job.status()

    @app.post(
        "/vectors",
        response_model=VectorUpload,
        status_code=201,
        tags=["training"],
        responses={400: {"model": ErrorResponse}},
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
        },
    )
    async def upload_vector(request: Request, name: str | None = None) -> VectorUpload:
        """Send a labelled vector file's bytes (GeoPackage, GeoJSON); `labels` in the answer goes into ExportTrainingRequest.labels."""
        if uploads is None:
            raise HTTPException(503, "this server takes no uploads.")
        return await uploads.save_vector(request.stream(), name)

    @app.delete("/vectors/{upload_id}", status_code=204, tags=["training"], responses={404: {"model": ErrorResponse}})
    def delete_vector(upload_id: str) -> Response:
        if uploads is None or not uploads.delete(upload_id):
            raise HTTPException(404, f"no uploaded vector file {upload_id}.")
        return Response(status_code=204)

    def trainer() -> TrainingJobs:
        if training is None or not training_installed():
            raise HTTPException(503, "this backend runs no training jobs (the `training` package is not installed beside it).")
        return training

    def find_training(job_id: str) -> TrainingJob:
        job = trainer().get(job_id)
        if job is None:
            raise HTTPException(404, f"no training job {job_id}: never submitted, or finished more than {trainer().result_ttl_s:g} s ago and dropped.")
        return job

    def created(job: TrainingJob) -> JobCreated:
        status = job.status()
        state = "running" if status.state == "cancelling" else status.state
        return JobCreated(id=job.id, state=state, progress=JobProgress(done=status.progress.done, total=status.progress.total), url=f"/training/{job.id}")

    training_responses = {422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}

    @app.post("/training/export", response_model=JobCreated, status_code=202, tags=["training"], responses=training_responses)
    def submit_export(request: ExportTrainingRequest) -> JobCreated:
        """Export a raster and its labelled polygons as a dataset folder (`rscovlm train export`), in a child
        process; training jobs run one at a time, the others wait queued. Poll `url`; bad input fails the job with its reason."""
        return created(trainer().submit("export", request))

    @app.post("/training/fit", response_model=JobCreated, status_code=202, tags=["training"], responses=training_responses)
    def submit_fit(request: FitTrainingRequest) -> JobCreated:
        """Fine-tune (`rscovlm train fit`) in a child process; the same request again resumes a cancelled run."""
        return created(trainer().submit("fit", request))

    @app.post("/training/grpo", response_model=JobCreated, status_code=202, tags=["training"], responses=training_responses)
    def submit_grpo(request: GrpoTrainingRequest) -> JobCreated:
        """Reinforcement fine-tuning with task rewards (`rscovlm train grpo`) in a child process; progress carries the mean
        reward per task; the same request again resumes a cancelled run."""
        return created(trainer().submit("grpo", request))

    @app.get("/training", response_model=list[TrainingJobStatus], tags=["training"])
    def list_training() -> list[TrainingJobStatus]:
        return [job.status() for job in trainer().list()]

    @app.get("/training/{job_id}", response_model=TrainingJobStatus, tags=["training"], responses={404: {"model": ErrorResponse}})
    def training_status(job_id: str) -> TrainingJobStatus:
        """State, progress (tiles, or steps with loss, learning rate and validation), the folders written, and the
        manifest or the run's metrics once done."""
        return find_training(job_id).status()

    @app.delete("/training/{job_id}", response_model=TrainingJobStatus, tags=["training"], responses={404: {"model": ErrorResponse}})
    def cancel_training(job_id: str) -> TrainingJobStatus:
        """Cancel: an export stops and leaves nothing; a fit writes a checkpoint first (state cancelling, then
        cancelled). A finished job is dropped."""
        job = trainer().cancel(job_id)
        if job is None:
            raise HTTPException(404, f"no training job {job_id}.")
        return job.status()

    def model_downloads() -> ModelDownloads:
        if models is None:
            raise HTTPException(503, "this app was built without a models folder (schema export only).")
        return models

    def models_in_use() -> tuple[str, ...]:
        """The engine's model, and its checkpoint and adapter when it runs one on the other."""
        model_id = jobs().engine.model_id if scheduler is not None else ""
        return (model_id, *model_id.split("+"))

    app.include_router(model_routes(model_downloads, models_in_use))

    def served_name() -> str:
        return served_model_name or jobs().engine.model_id

    @app.get("/v1/models", response_model=ModelList, tags=["openai"])
    def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=served_name(), created=int(jobs().started))])

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        tags=["openai"],
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "the completion, or with stream: true its server-sent events"},
            400: {"model": ErrorResponse},
            413: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
            503: {"model": ErrorResponse},
        },
    )
    async def chat(request: ChatCompletionRequest):
        """OpenAI-compatible, greedy; images as data URLs, fitted into the model's trained pixel range. Queued with the
        jobs, so it shares their batches."""
        trained = TaskOptions(**jobs().engine.defaults.options)
        conversation = await run_in_threadpool(conversation_from_request, request, trained.min_pixels, trained.max_pixels)
        try:
            generation = await asyncio.wrap_future(jobs().chat(conversation, max_tokens(request)))
        except Cancelled as exc:
            raise ServiceBusy(str(exc)) from None
        except RuntimeError as exc:
            raise HTTPException(500, str(exc)) from None
        if request.stream:
            include_usage = request.stream_options is not None and request.stream_options.include_usage
            return StreamingResponse(iter(stream_events(generation, served_name(), include_usage)), media_type="text/event-stream")
        return completion(generation, served_name())

    return app



def openapi_json() -> str:
    """The schema as resources/openapi.json holds it (a test fails when the two drift apart)."""
    return json.dumps(create_app().openapi(), indent=2, ensure_ascii=False) + "\n"

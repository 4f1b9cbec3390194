"""The routes of the Models list: the model folders the backend can use, downloads from the hub
into them (queued, with progress and cancel), and deleting one folder by its name."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, HTTPException

from backend.contract import ErrorResponse, ModelDownloadRequest, ModelDownloadStatus, ModelFolders
from backend.errors import UserError
from backend.model_folders import deletable_folder, delete_model_folder, folder_name_for, list_model_folders
from backend.server.model_downloads import ModelDownload, ModelDownloads, folder_info

NOT_FOUND = {404: {"model": ErrorResponse}}


def model_routes(downloads: Callable[[], ModelDownloads], in_use: Callable[[], tuple[str, ...]]) -> APIRouter:
    """`downloads()` gives the queue (or raises a 503); `in_use()` the paths of the model the
    service runs, which are never deleted."""
    router = APIRouter(tags=["models"])

    def find(download_id: str) -> ModelDownload:
        job = downloads().get(download_id)
        if job is None:
            raise HTTPException(404, f"no download {download_id}: never submitted, or finished more than {downloads().result_ttl_s:g} s ago.")
        return job

    @router.get("/models", response_model=ModelFolders)
    def model_folders() -> ModelFolders:
        """The models folder's checkpoints and adapters (size, kind, trained classes, which one runs), the downloads
        that stopped part way, and the downloads of this service."""
        queue, used = downloads(), in_use()
        return ModelFolders(folder=str(queue.folder), models=[folder_info(found, used) for found in list_model_folders(queue.folder)],
                            downloads=[job.status() for job in queue.list()])

    @router.post("/models/downloads", response_model=ModelDownloadStatus, status_code=202, responses={400: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})
    def download(request: ModelDownloadRequest) -> ModelDownloadStatus:
        """Download a hub model (Qingyun/RSCoVLM-7B-2512, or any Qwen2.5-VL checkpoint or adapter) into the models folder;
        poll its url, DELETE it to cancel. A repository without such a model fails before its weights are fetched."""
        return downloads().submit(request).status()

    @router.get("/models/downloads/{download_id}", response_model=ModelDownloadStatus, responses=NOT_FOUND)
    def download_status(download_id: str) -> ModelDownloadStatus:
        return find(download_id).status()

    @router.delete("/models/downloads/{download_id}", response_model=ModelDownloadStatus, responses=NOT_FOUND)
    def cancel_download(download_id: str) -> ModelDownloadStatus:
        """Cancel: it stops at the next chunk; the files that arrived stay for the next download of the same id."""
        downloads().cancel(download_id)
        return find(download_id).status()

    @router.delete("/models/{name}", response_model=ModelFolders, responses={400: {"model": ErrorResponse}})
    def delete_model(name: str) -> ModelFolders:
        """Delete one model folder, or a download that stopped part way, by the name the list shows. Refused for
        anything else in the folder, for the model the service runs and for a download in progress."""
        if any(job.active and folder_name_for(job.request.repo_id) == name for job in downloads().list()):
            raise UserError(f"{name} is being downloaded.", "Cancel the download first.")
        delete_model_folder(deletable_folder(downloads().folder, name, in_use()))
        return model_folders()

    return router

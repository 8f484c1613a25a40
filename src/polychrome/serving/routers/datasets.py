"""Datasets: upload (an import job), list, show, report, preview, remove."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from ...errors import DatasetError, ImageRejected, NotFound
from ...persistence import jobs as jobs_store
from ...settings import Settings
from ...utils.atomic import atomic_write_json
from ..deps import checked_ref, get_app_settings
from ..errors import BadRequest
from ..jobs.queue import enqueue_job
from ..jobs.runners import uploads_dir
from ..openapi import errors
from ..schemas import NAME_SCHEMA, JobOut, name_path
from ..style_support import PICTURE_TYPES

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/datasets", tags=["datasets"])
# `name:version` is taken too, but `version` says it in the query
DatasetName = name_path("dataset")

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["name", "files"],
            "properties": {
                "name": {"type": "string", "description": "dataset name", **NAME_SCHEMA},
                "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "minItems": 1,
                          "description": "one .zip/.tar(.gz) archive, or pictures ("
                                         f"{PICTURE_TYPES}) whose filenames are relative "
                                         "paths 'style/name.png'"},
            },
        }}},
    },
}


def _check_image(name: str, data: bytes, max_pixels: int) -> str | None:
    """None if the one safe decoder accepts the file, else 'name: reason (code)'."""
    from ...imageio import decode_image

    try:
        decode_image(data, max_pixels=max_pixels)
    except ImageRejected as e:
        return f"{e.code}|{name}: {e}"
    return None


async def _read_capped(f: UploadFile, limit: int, name: str) -> bytes:
    data = await f.read(limit + 1)
    if len(data) > limit:
        raise DatasetError(f"{name}: file larger than {limit} bytes (max_member_bytes)",
                           code="unsafe")
    return data


def _stage(job_id: str, manifest: dict[str, Any], blobs: list[bytes]) -> None:
    d = uploads_dir(job_id)
    (d / "files").mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(blobs):
        (d / "files" / f"{i:06d}").write_bytes(data)
    atomic_write_json(d / "manifest.json", manifest)


def _stage_archive(job_id: str, f: UploadFile) -> str:
    d = uploads_dir(job_id)
    d.mkdir(parents=True, exist_ok=True)
    f.file.seek(0)
    with open(d / "archive", "wb") as out:
        shutil.copyfileobj(f.file, out, 1024 * 1024)
    atomic_write_json(d / "manifest.json", {"kind": "archive", "file": "archive",
                                            "filename": f.filename or ""})
    return "archive"


def _is_archive(head: bytes) -> bool:
    return (head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or head[:2] == b"\x1f\x8b"
            or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00" or head[257:262] == b"ustar")


@router.post("", status_code=202, response_model=JobOut, openapi_extra=_UPLOAD_SCHEMA,
             responses=errors(413, 422, 503))
async def upload_dataset(request: Request,
                         settings: Settings = Depends(get_app_settings)) -> Any:
    """Upload one archive or many image files (+ `name`): starts an import job (202)."""
    from ...data.sources import is_skipped, shown_name, split_member_path
    from ...persistence.datasets import validate_name

    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise BadRequest("send multipart/form-data with a 'name' field and 'files'",
                         code="bad_request")
    try:
        form = await request.form(max_files=settings.max_members + 1,
                                  max_fields=settings.max_members + 16)
    except Exception as e:  # a malformed multipart body is the client's mistake
        if "exceed" in str(e).lower() or "too many" in str(e).lower():
            raise BadRequest(f"too many files: {e}", code="too_many_files") from None
        raise BadRequest(f"malformed multipart body: {e}") from None
    try:
        name = form.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("missing form field 'name' (the dataset name)")
        validate_name(name)
        files = [f for key, f in form.multi_items()
                 if key in ("files", "file") and isinstance(f, UploadFile)]
        if not files:
            raise BadRequest("no files uploaded: send one archive or image files as 'files'")
        job_id = uuid.uuid4().hex
        head = await files[0].read(512)
        await files[0].seek(0)
        if len(files) == 1 and _is_archive(head):
            size = files[0].size or 0
            if size > settings.max_archive_bytes:
                raise DatasetError(f"archive larger than {settings.max_archive_bytes} bytes",
                                   code="unsafe")
            await asyncio.to_thread(_stage_archive, job_id, files[0])
            source = f"upload:{shown_name(files[0].filename or 'archive')}"
        else:
            if len(files) > settings.max_members:
                raise DatasetError(f"more than {settings.max_members} files", code="unsafe")
            names: list[str] = []
            blobs: list[bytes] = []
            problems: list[str] = []
            for f in files:
                raw = f.filename or ""
                parts, why = split_member_path(raw)
                if parts is None:
                    raise DatasetError(f"unsafe file name '{shown_name(raw)}': {why}",
                                       code="unsafe")
                if is_skipped(parts):
                    continue
                rel = "/".join(parts)
                data = await _read_capped(f, settings.max_member_bytes, rel)
                problem = await asyncio.to_thread(_check_image, rel, data, settings.max_pixels)
                if problem:
                    problems.append(problem)
                    continue
                names.append(rel)
                blobs.append(data)
            if problems:
                code = problems[0].split("|", 1)[0]
                shown = "; ".join(p.split("|", 1)[1] for p in problems[:5])
                more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
                raise ImageRejected(f"{len(problems)} uploaded file(s) rejected by the image "
                                    f"decoder: {shown}{more}", code=code)
            if not names:
                raise BadRequest("no image files in the upload (hidden files are skipped)")
            await asyncio.to_thread(_stage, job_id, {"kind": "files", "names": names}, blobs)
            source = f"upload:{len(names)} files"
    finally:
        await form.close()
    try:
        job = await asyncio.to_thread(
            jobs_store.create_job, "import", {"name": name, "source": source},
            queue_max=settings.queue_max, job_id=job_id)
    except BaseException:
        shutil.rmtree(uploads_dir(job_id), ignore_errors=True)
        raise
    await asyncio.to_thread(enqueue_job, job_id)
    return JSONResponse(job, status_code=202, headers={"Location": f"/api/jobs/{job_id}"})


@router.get("")
def list_datasets() -> dict[str, Any]:
    from ...persistence.datasets import list_datasets as _list

    return {"items": _list()}


@router.get("/{name}")
def show_dataset(name: str = DatasetName,
                 version: int | None = Query(None, ge=1, le=10**9)) -> dict[str, Any]:
    from ...persistence.datasets import show_dataset as _show

    info = _show(checked_ref(name, "dataset name"), version)
    info.pop("path", None)  # server paths are not the client's business
    return info


@router.get("/{name}/report")
def dataset_report(name: str = DatasetName,
                   version: int | None = Query(None, ge=1, le=10**9)) -> dict[str, Any]:
    from ...persistence.datasets import dataset_report as _report

    return {"items": _report(checked_ref(name, "dataset name"), version)}


@router.get("/{name}/preview.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def dataset_preview(name: str = DatasetName,
                    version: int | None = Query(None, ge=1, le=10**9),
                    per_domain: int = Query(8, ge=1, le=32)) -> Response:
    """A grid of sample images, a row per style."""
    from ...data.preview import preview_grid
    from ...imageio import encode_png

    grid = preview_grid(checked_ref(name, "dataset name"), version=version,
                        per_domain=per_domain)  # (H, W, 3) uint8
    return Response(encode_png(grid, {"dataset": name}), media_type="image/png",
                    headers={"Cache-Control": "no-cache"})


@router.delete("/{name}")
def remove_dataset(name: str = DatasetName,
                   version: int | None = Query(None, ge=1, le=10**9)) -> dict[str, Any]:
    from ...persistence.datasets import remove_dataset as _remove

    return {"name": name, "removed_versions": _remove(checked_ref(name, "dataset name"), version)}


def inbox_dir(settings: Settings) -> Path:
    """Server-side drop folder that import jobs given by path may read from."""
    return settings.inbox_dir


def stage_inbox_import(job_id: str, path: str, settings: Settings) -> dict[str, Any]:
    """Manifest for an import job reading a file or folder inside the inbox."""
    from ...data.sources import MAX_COMPONENT_BYTES, name_problem, shown_name

    problem = name_problem(path) or next(
        (f"a name longer than {MAX_COMPONENT_BYTES} bytes" for part in path.split("/")
         if len(part.encode("utf-8", "replace")) > MAX_COMPONENT_BYTES), "")
    if problem:  # a NUL byte would reach the filesystem calls below as a ValueError
        raise DatasetError(f"import path '{shown_name(path)}' refused: {problem}",
                           code="unsafe")
    root = inbox_dir(settings).resolve()
    try:
        target = (root / path).resolve()
        inside = root == target or root in target.parents
        exists = inside and target.exists()
    except (OSError, ValueError) as e:
        raise DatasetError(f"import path '{shown_name(path)}' cannot be read: "
                           f"{getattr(e, 'strerror', None) or e}", code="bad_source") from None
    if not inside:
        raise DatasetError(f"import path '{shown_name(path)}' is outside the server inbox "
                           f"($POLYCHROME_HOME/inbox)", code="unsafe")
    if not exists:  # 404, as for a dataset or model a request names that is not there
        raise NotFound(f"import path '{shown_name(path)}' not found in the server inbox",
                       code="bad_source")
    d = uploads_dir(job_id)
    d.mkdir(parents=True, exist_ok=True)
    manifest = {"kind": "path", "path": str(target)}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return manifest

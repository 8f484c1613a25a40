"""A Python client for the Polychrome REST API (`polychrome serve`).

    from polychrome.client import Client

    with Client("http://127.0.0.1:8765", api_key=None) as api:
        picture = api.restyle("emoji-stargan", "my.png", style="noto")[0]
        picture.save("restyled.png")
        job = api.train("dcgan", "mystyles", steps=500)
        for event in api.events(job.id):           # progress as it happens (SSE)
            print(event.event, event.data.get("progress"))
        print(api.job(job.id).state)

Every route has a method; answers are typed (the API's own pydantic models, or the
small ones below); pictures come back as `Picture` (PNG bytes, gallery id, metadata).
An error answer `{"error": {"code", "message"}}` is raised as the project's exception for
its status and code -- NotFound (404), BadRequest (400), ConfigError, ImageRejected (422),
JobStateError / Conflict (409), Unauthorized (401), RateLimited (429, `retry_after`),
PayloadTooLarge (413), ServiceUnavailable (503), GenerateTimeout (504) -- or `APIError`
for any other; each carries `.code`, `.status` and str(error) is the server's message.
Uploads take bytes, a path or a binary file object. Needs only httpx and pydantic.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict

from .errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    ImageRejected,
    JobStateError,
    ModelError,
    NotFound,
    PolychromeError,
    QueueFull,
    TrainingError,
)
from .serving.errors import (
    BadRequest,
    GenerateTimeout,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from .serving.schemas import (
    GenerateOut,
    Health,
    ImageList,
    ImageOut,
    JobList,
    JobOut,
    PresetOut,
    Ready,
    StyleReferenceOut,
    StyleSessionOut,
)

__all__ = [
    "APIError", "Architecture", "Client", "Conflict", "DatasetInfo", "DatasetSummary",
    "JobEvent",
    "ModelInfo", "ModelSummary", "Picture", "ServiceUnavailable", "Session", "Worker",
    "raise_for_error",
]

Upload = bytes | str | os.PathLike | IO[bytes]
M = TypeVar("M", bound=BaseModel)
FINAL_STATES = ("succeeded", "failed", "cancelled")


# -- errors ----------------------------------------------------------------------------------
class APIError(PolychromeError):
    """An error answer with no more specific class (403, 405, 408, 500, ...)."""


class Conflict(PolychromeError):
    """409: what the resource's state does not allow."""

    code = "conflict"
    http_status = 409


class ServiceUnavailable(PolychromeError):
    """503: the server is overloaded or its job queue is full; `retry_after` seconds."""

    code = "unavailable"
    http_status = 503


# The decoder's refusals of a picture (422), and other codes with a class of their own.
_BY_CODE: dict[str, type[PolychromeError]] = {
    **dict.fromkeys(("corrupt", "unsupported", "too_large", "too_small", "unsafe"),
                    ImageRejected),
    "config_error": ConfigError, "model_error": ModelError, "job_state": JobStateError,
    "queue_full": QueueFull, "dataset_error": DatasetError, "bad_source": DatasetError,
    "checkpoint_error": CheckpointError, "training_error": TrainingError,
}
_BY_STATUS: dict[int, type[PolychromeError]] = {
    400: BadRequest, 401: Unauthorized, 404: NotFound, 409: Conflict, 413: PayloadTooLarge,
    422: BadRequest, 429: RateLimited, 503: ServiceUnavailable, 504: GenerateTimeout,
}


def _error_class(status: int, code: str) -> type[PolychromeError]:
    cls = _BY_CODE.get(code)
    if cls is ImageRejected and status != 422:  # e.g. `unsafe` archives, `too_large` sizes
        cls = DatasetError if code == "unsafe" else None
    return cls or _BY_STATUS.get(status, APIError)


def raise_for_error(response: httpx.Response) -> None:
    """Raise the project's exception for an error answer (status >= 400)."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
        error = body["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code = "http_error"
        message = f"HTTP {response.status_code}: {response.text[:300]}"
    cls = _error_class(response.status_code, code)
    retry = response.headers.get("retry-after")
    if cls is RateLimited:
        exc: PolychromeError = RateLimited(message, retry_after=float(retry or 1))
        exc.code = code
    else:
        exc = cls(message, code=code)
        if retry is not None:
            exc.retry_after = float(retry)  # type: ignore[attr-defined]
    exc.status = response.status_code  # type: ignore[attr-defined]
    exc.http_status = response.status_code
    raise exc


# -- results the API's schemas do not already type -------------------------------------------
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class ModelSummary(_Open):
    name: str
    latest_version: int
    versions: list[int]
    arch: str
    family: str
    styles: list[str]
    task: str | None = None
    scales: list[int] = []


class ModelInfo(_Open):
    name: str
    version: int | None = None
    versions: list[dict[str, Any]] = []
    arch: str | None = None
    family: str | None = None
    styles: list[str] = []
    card: str | None = None


class DatasetSummary(_Open):
    name: str
    versions: list[int]
    latest_version: int
    images: int | None = None
    domains: dict[str, int] | None = None


class DatasetInfo(_Open):
    name: str
    version: int | None = None
    versions: list[int] = []
    images: int | None = None
    domains: dict[str, int] | None = None


class Architecture(_Open):
    name: str
    family: str
    description: str = ""


class Worker(_Open):
    id: str
    host: str | None = None
    pid: int | None = None
    job_id: str | None = None


@dataclasses.dataclass
class JobEvent:
    """One Server-Sent Event of a job: `state`, `progress`, `sample` or `end` (whose data
    is the whole job; `job` gives it typed)."""

    event: str
    data: dict[str, Any]

    @property
    def job(self) -> JobOut | None:
        return JobOut.model_validate(self.data) if self.event == "end" else None


@dataclasses.dataclass
class Picture:
    """An image the API answered: its PNG bytes, its gallery id (None when not saved) and
    its metadata (the recipe: model, version, style, seed, ...)."""

    png: bytes
    image_id: int | None
    metadata: dict[str, str]
    headers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_bytes(self.png)
        return path

    def array(self) -> Any:
        """(H, W, 3) uint8 pixels (decoded by polychrome.imageio)."""
        from .imageio import decode_image

        return decode_image(self.png)


def _picture(response: httpx.Response) -> Picture:
    headers = dict(response.headers)
    meta = {k[len("x-polychrome-"):].replace("-", "_"): v for k, v in headers.items()
            if k.startswith("x-polychrome-")}
    image_id = meta.pop("image_id", None)
    try:
        from .imageio import read_png_metadata

        meta.update(read_png_metadata(response.content))
    except Exception:  # noqa: BLE001 - the headers are enough without the decoder
        pass
    return Picture(png=response.content, image_id=int(image_id) if image_id else None,
                   metadata=meta, headers=headers)


def _file(upload: Upload, default: str) -> tuple[str, bytes]:
    if isinstance(upload, bytes | bytearray):
        return default, bytes(upload)
    if isinstance(upload, str | os.PathLike):
        path = Path(upload)
        return path.name, path.read_bytes()
    name = os.path.basename(getattr(upload, "name", "") or default)
    return name, upload.read()


def _fields(values: Mapping[str, Any]) -> dict[str, str]:
    """Form fields as the API reads them: None left out, JSON for lists and mappings."""
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, Mapping | list | tuple):
            out[key] = json.dumps(value if not isinstance(value, tuple) else list(value))
        else:
            out[key] = str(value)
    return out


# -- the client ------------------------------------------------------------------------------
class Client:
    """The REST API over HTTP. `api_key` is sent as X-API-Key (servers with api_keys)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8765", *, api_key: str | None = None,
                 timeout: float = 120.0, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None):
        all_headers = dict(headers or {})
        if api_key:
            all_headers["X-API-Key"] = api_key
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=all_headers,
                                 timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # plumbing
    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request; an error answer raises the project's exception."""
        response = self.http.request(method, path, **kw)
        raise_for_error(response)
        return response

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    def _typed(self, model: type[M], method: str, path: str, **kw: Any) -> M:
        return model.model_validate(self._json(method, path, **kw))

    def _items(self, model: type[M], path: str, **kw: Any) -> list[M]:
        return [model.model_validate(i) for i in self._json("GET", path, **kw)["items"]]

    def _images(self, response: httpx.Response) -> list[Picture]:
        """An image/png answer (one picture) or JSON gallery records (several)."""
        if response.headers.get("content-type", "").startswith("image/"):
            return [_picture(response)]
        return [self.image_picture(i.id) for i in GenerateOut.model_validate(
            response.json()).images]

    # -- health --------------------------------------------------------------------------------
    def health(self) -> Health:
        return self._typed(Health, "GET", "/api/health")

    def ready(self) -> Ready:
        """Readiness; a server that is not ready answers 503 with the same body (returned
        here, not raised)."""
        response = self.http.get("/api/ready")
        if response.status_code not in (200, 503):
            raise_for_error(response)
        return Ready.model_validate(response.json())

    def metrics(self) -> str:
        return self.request("GET", "/metrics").text

    def workers(self) -> list[Worker]:
        return self._items(Worker, "/api/workers")

    # -- datasets --------------------------------------------------------------------------------
    def datasets(self) -> list[DatasetSummary]:
        return self._items(DatasetSummary, "/api/datasets")

    def dataset(self, name: str, version: int | None = None) -> DatasetInfo:
        return self._typed(DatasetInfo, "GET", f"/api/datasets/{name}",
                           params=_fields({"version": version}))

    def dataset_report(self, name: str, version: int | None = None) -> list[dict[str, Any]]:
        return self._json("GET", f"/api/datasets/{name}/report",
                          params=_fields({"version": version}))["items"]

    def dataset_preview(self, name: str, version: int | None = None,
                        per_domain: int = 8) -> bytes:
        return self.request("GET", f"/api/datasets/{name}/preview.png",
                            params=_fields({"version": version,
                                            "per_domain": per_domain})).content

    def delete_dataset(self, name: str, version: int | None = None) -> list[int]:
        return self._json("DELETE", f"/api/datasets/{name}",
                          params=_fields({"version": version}))["removed_versions"]

    def upload_dataset(self, name: str, files: Upload | Mapping[str, Upload]) -> JobOut:
        """Import a dataset: one archive (.zip, .tar(.gz)), or pictures given as
        {"style/name.png": bytes | path | file} (an import job, returned at once)."""
        if isinstance(files, Mapping):
            parts = [("files", (rel, _file(f, rel)[1])) for rel, f in files.items()]
        else:
            parts = [("files", _file(files, "archive.zip"))]
        return self._typed(JobOut, "POST", "/api/datasets", data={"name": name},
                           files=parts)

    # -- jobs --------------------------------------------------------------------------------
    def create_job(self, kind: Literal["train", "eval", "import"], **fields: Any) -> JobOut:
        body = {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}
        return self._typed(JobOut, "POST", "/api/jobs", json=body)

    def train(self, model: str, dataset: str, *, steps: int | None = None,
              **fields: Any) -> JobOut:
        """A train job: `model` is an architecture (dcgan, stylegan, stargan, ...); other
        fields as the API's (batch_size, resolution, seed, name, config, nproc, webhook)."""
        return self.create_job("train", model=model, dataset=dataset, steps=steps, **fields)

    def evaluate(self, model: str, dataset: str, **fields: Any) -> JobOut:
        return self.create_job("eval", model=model, dataset=dataset, **fields)

    def import_path(self, name: str, path: str, **fields: Any) -> JobOut:
        """Import a folder or archive already in the server's inbox."""
        return self.create_job("import", name=name, path=path, **fields)

    def jobs(self, *, state: str | None = None, kind: str | None = None, limit: int = 50,
             offset: int = 0) -> list[JobOut]:
        params = _fields({"state": state, "kind": kind, "limit": limit, "offset": offset})
        return JobList.model_validate(self._json("GET", "/api/jobs", params=params)).items

    def job(self, job_id: str) -> JobOut:
        return self._typed(JobOut, "GET", f"/api/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> JobOut:
        return self._typed(JobOut, "POST", f"/api/jobs/{job_id}/cancel")

    def retry_job(self, job_id: str) -> JobOut:
        """A failed or cancelled training job back to the queue (it resumes)."""
        return self._typed(JobOut, "POST", f"/api/jobs/{job_id}/retry")

    def job_samples(self, job_id: str) -> list[str]:
        return [i["file"] for i in self._json("GET", f"/api/jobs/{job_id}/samples")["items"]]

    def job_sample(self, job_id: str, file: str) -> bytes:
        return self.request("GET", f"/api/jobs/{job_id}/samples/{file}").content

    def events(self, job_id: str, *, timeout: float | None = None) -> Iterator[JobEvent]:
        """The job's progress as it happens (GET /api/jobs/{id}/events, Server-Sent
        Events), until its `end` event (the last one yielded). `timeout`: the most seconds
        to wait for the next event (None: as long as it takes)."""
        timeouts = httpx.Timeout(self.http.timeout.connect, read=timeout)
        with self.http.stream("GET", f"/api/jobs/{job_id}/events",
                              timeout=timeouts) as response:
            if response.status_code >= 400:
                response.read()
                raise_for_error(response)
            event, data = None, []
            for line in response.iter_lines():
                if line.startswith(":"):
                    continue  # keep-alive comment
                if not line:
                    if event is not None:
                        item = JobEvent(event, json.loads("\n".join(data) or "null"))
                        yield item
                        if event == "end":
                            return
                    event, data = None, []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())

    def wait(self, job_id: str, *, timeout: float | None = None) -> JobOut:
        """Follow the job's events to its end; the finished job."""
        last = None
        for event in self.events(job_id, timeout=timeout):
            last = event
        if last is None or last.job is None:
            return self.job(job_id)
        return last.job

    # -- models --------------------------------------------------------------------------------
    def models(self) -> list[ModelSummary]:
        return self._items(ModelSummary, "/api/models")

    def model(self, name: str) -> ModelInfo:
        """`name` or `name:version`."""
        return self._typed(ModelInfo, "GET", f"/api/models/{name}")

    def model_samples(self, name: str, cols: int = 8) -> bytes:
        """A noise model's sample grid (PNG): a row per style."""
        return self.request("GET", f"/api/models/{name}/samples.png",
                            params={"cols": cols}).content

    def architectures(self) -> list[Architecture]:
        return self._items(Architecture, "/api/architectures")

    def presets(self, model: str = "dcgan") -> list[PresetOut]:
        return self._items(PresetOut, "/api/presets", params={"model": model})

    def estimate(self, model: str, dataset: str, preset: str = "quick",
                 **fields: Any) -> dict[str, Any]:
        body = {"model": model, "dataset": dataset, "preset": preset,
                **{k: v for k, v in fields.items() if v is not None}}
        return self._json("POST", "/api/presets/estimate", json=body)

    # -- generation and the gallery --------------------------------------------------------------
    def generate(self, model: str, n: int = 1, *, seed: int | None = None,
                 style: str | int | None = None, truncation: float | None = None,
                 upscale: int | None = None, upscaler: str | None = None) -> list[Picture]:
        """n pictures from a noise model (picture i from seed + i), saved in the gallery."""
        body = {"model": model, "n": n, "seed": seed, "style": style, "truncation": truncation,
                "upscale": upscale, "upscaler": upscaler}
        return self._images(self.request("POST", "/api/generate",
                                         json={k: v for k, v in body.items() if v is not None}))

    def images(self, *, limit: int = 50, offset: int = 0, cursor: int | None = None,
               model: str | None = None, style: str | None = None) -> ImageList:
        params = _fields({"limit": limit, "offset": offset, "cursor": cursor, "model": model,
                          "style": style})
        return self._typed(ImageList, "GET", "/api/images", params=params)

    def image(self, image_id: int) -> ImageOut:
        return self._typed(ImageOut, "GET", f"/api/images/{image_id}")

    def image_png(self, image_id: int) -> bytes:
        return self.request("GET", f"/api/images/{image_id}.png").content

    def image_picture(self, image_id: int) -> Picture:
        info = self.image(image_id)
        return Picture(png=self.image_png(image_id), image_id=image_id,
                       metadata=dict(info.metadata))

    def delete_image(self, image_id: int) -> None:
        self.request("DELETE", f"/api/images/{image_id}")

    def regenerate(self, image_id: int) -> Picture:
        """Make a gallery image again from its metadata; metadata["identical"] says
        whether the pixels are the stored ones ("true" / "false")."""
        return _picture(self.request("POST", f"/api/images/{image_id}/regenerate"))

    # -- style operations -------------------------------------------------------------------------
    def restyle(self, model: str, image: Upload, *, style: str | None = None,
                reference: Upload | None = None, **options: Any) -> list[Picture]:
        """Restyle a picture into `style` or a `reference` picture's style. Options as the
        API's: reference_style, strength, seed, variations, pixel_blend, size, upscale,
        upscaler."""
        files = [("image", _file(image, "image.png"))]
        if reference is not None:
            files.append(("reference", _file(reference, "reference.png")))
        data = _fields({"model": model, "style": style, **options})
        return self._images(self.request("POST", "/api/restyle", data=data, files=files))

    def mix(self, model: str, weights: Mapping[str, float] | None = None, *,
            image: Upload | None = None, references: Iterable[Upload] = (),
            reference_weights: Iterable[float] | None = None, **options: Any) -> Picture:
        """A blend of styles ({"ink": 0.7, "neon": 0.3}) and / or reference pictures: a
        noise model generates, a translation model restyles `image`. Options: seed,
        strength, pixel_blend, crossover, reference_style, size, save."""
        refs = [("reference", _file(r, f"reference-{i}.png"))
                for i, r in enumerate(references)]
        if image is None and not refs:
            body = {"model": model, "weights": dict(weights or {}), **options}
            return _picture(self.request("POST", "/api/mix", json=body))
        files = refs + ([("image", _file(image, "image.png"))] if image is not None else [])
        data = _fields({"model": model, "weights": dict(weights) if weights else None,
                        "reference_weights": list(reference_weights)
                        if reference_weights is not None else None, **options})
        return _picture(self.request("POST", "/api/mix", data=data, files=files))

    def interpolate(self, model: str, from_: str | None = None, to: str | None = None, *,
                    image: Upload | None = None, from_reference: Upload | None = None,
                    to_reference: Upload | None = None, **options: Any) -> bytes:
        """An animated GIF from one style (or reference picture) to another. Options:
        frames, seed, style, fps, scale, pingpong, size."""
        uploads = {"image": image, "from_reference": from_reference,
                   "to_reference": to_reference}
        files = [(k, _file(v, f"{k}.png")) for k, v in uploads.items() if v is not None]
        fields = {"model": model, "from": from_, "to": to, **options}
        if not files:
            body = {k: v for k, v in fields.items() if v is not None}
            return self.request("POST", "/api/interpolate", json=body).content
        return self.request("POST", "/api/interpolate", data=_fields(fields),
                            files=files).content

    def restore(self, model: str, image: Upload, *, mask: Upload | None = None,
                task: str | None = None, scale: int | None = None,
                save: bool | None = None) -> Picture:
        """Super-resolution, inpainting (white in `mask` = fill in) or colorization."""
        files = [("image", _file(image, "image.png"))]
        if mask is not None:
            files.append(("mask", _file(mask, "mask.png")))
        data = _fields({"model": model, "task": task, "scale": scale, "save": save})
        return _picture(self.request("POST", "/api/restore", data=data, files=files))

    # -- live restyle sessions ------------------------------------------------------------------
    def open_session(self, model: str, image: Upload) -> Session:
        """Upload a picture once; its renders then run the decoder only."""
        info = self._typed(StyleSessionOut, "POST", "/api/restyle/sessions",
                           data={"model": model}, files=[("image", _file(image, "image.png"))])
        return Session(self, info)

    def session(self, session_id: str) -> Session:
        return Session(self, self._typed(StyleSessionOut, "GET",
                                         f"/api/restyle/sessions/{session_id}"))


class Session:
    """A live restyle session (Client.open_session); a context manager that closes it."""

    def __init__(self, client: Client, info: StyleSessionOut):
        self.client = client
        self.info = info

    @property
    def id(self) -> str:
        return self.info.session

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def refresh(self) -> StyleSessionOut:
        self.info = self.client._typed(StyleSessionOut, "GET",
                                       f"/api/restyle/sessions/{self.id}")
        return self.info

    def add_reference(self, picture: Upload) -> StyleReferenceOut:
        """A reference picture; its `reference` id ('ref:<sha256>') works as a style."""
        return self.client._typed(StyleReferenceOut, "POST",
                                  f"/api/restyle/sessions/{self.id}/references",
                                  files=[("reference", _file(picture, "reference.png"))])

    def render(self, style: str | None = None, *, weights: Mapping[str, float] | None = None,
               **options: Any) -> Picture:
        """A style or a blend (weights); options: reference_style, strength, seed,
        pixel_blend, save (False for live previews)."""
        body = {"style": style, "weights": dict(weights) if weights else None, **options}
        return _picture(self.client.request(
            "POST", f"/api/restyle/sessions/{self.id}/render",
            json={k: v for k, v in body.items() if v is not None}))

    def full(self, style: str | None = None, *, weights: Mapping[str, float] | None = None,
             **options: Any) -> Picture:
        """The recipe at full size (style and weights omitted: the last render's); options
        as render's plus size, upscale, upscaler."""
        body = {"style": style, "weights": dict(weights) if weights else None, **options}
        return _picture(self.client.request(
            "POST", f"/api/restyle/sessions/{self.id}/full",
            json={k: v for k, v in body.items() if v is not None}))

    def close(self) -> None:
        try:
            self.client.request("DELETE", f"/api/restyle/sessions/{self.id}")
        except NotFound:
            pass  # already closed or expired

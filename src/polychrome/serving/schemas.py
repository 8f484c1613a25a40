"""Request and response bodies of the REST API, in one place."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# Stored names (datasets, models) as the stores accept them. The schema states the
# patterns; the routes check names themselves (400 bad_name, or 404 for a model that
# cannot exist), so a bad one is refused with a message that names the field. The
# `(?!\n)` after `$` keeps Python's `$` (which also matches before a final newline) as
# strict as ECMA's.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$(?!\n)"
REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(:[0-9]{1,9})?$(?!\n)"
NAME_SCHEMA = {"pattern": NAME_PATTERN, "maxLength": 64}
REF_SCHEMA = {"pattern": REF_PATTERN, "maxLength": 74}
# An http(s) URL with a host (and a port that exists), without a user name or password.
# The server also refuses a host that is, or resolves to, a loopback, private or reserved
# address (400 bad_webhook), which no schema can say.
_PORT = r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?"
WEBHOOK_SCHEMA = {"pattern": r"^https?://(?:[^\s/?#@\[\]:]+|\[[0-9A-Fa-f:.]+\])" + _PORT
                  + r"(?:[/?#][^\s]*)?$(?!\n)"}
Webhook = Annotated[str, Field(max_length=2048, pattern=r"^https?://",
                               json_schema_extra=WEBHOOK_SCHEMA)]
# A file or folder inside the inbox: relative, no `..`, no control or bidirectional
# characters, components of at most 63 characters (255 bytes in any script).
IMPORT_PATH_PATTERN = (r"^(?!/)(?!(?:.*/)?\.\.(?:/|$))(?!.*[^/]{64})"
                       r"[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+$(?!\n)")
# name or name:version
Name = Annotated[str, Field(min_length=1, max_length=128, json_schema_extra=REF_SCHEMA)]
# a name without a version (what a new dataset or model is called)
NewName = Annotated[str, Field(min_length=1, max_length=128, json_schema_extra=NAME_SCHEMA)]


def _present(field: str, kind: str) -> dict[str, Any]:
    """JSON Schema: `field` is given and not null."""
    return {"required": [field], "properties": {field: {"type": kind}}}


# `upscaler` names the model for `upscale`: refused without the factor.
UPSCALER_NEEDS_UPSCALE = {"anyOf": [{"not": _present("upscaler", "string")},
                                    _present("upscale", "integer")]}
# Multipart forms carry no nulls: a field is given or it is not. Rules over forms look at
# text fields and at whether a file is there (`required`), never at a file's value or at
# its absence: schemathesis cannot validate a body holding files against those (what
# such a rule would say is in the fields' descriptions).
FORM_UPSCALER_NEEDS_UPSCALE = {"dependentRequired": {"upscaler": ["upscale"]}}


# Style weights: none negative and at least one positive (a blend of nothing, or one that
# extrapolates beyond the styles, is refused: 400 bad_weight).
_NOT_NEGATIVE = {"additionalProperties": {"minimum": 0}}
SOME_POSITIVE = {"minProperties": 1, **_NOT_NEGATIVE,
                 "not": {"additionalProperties": {"maximum": 0}}}


def _one_of_form(field: str, upload: str) -> dict[str, Any]:
    """Multipart: exactly one of a text field and a file field."""
    return {"oneOf": [{"required": [field]}, {"required": [upload]}]}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: {"error": {"code", "message"}}."""

    error: ErrorDetail


class _Strict(BaseModel):
    # Unknown fields are refused: a misspelt option should not be silently ignored.
    model_config = ConfigDict(extra="forbid")


# -- jobs ------------------------------------------------------------------------------
class TrainJobIn(_Strict):
    # `dataset` as name:version, or `dataset_version` beside a plain name: not both.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"properties": {"dataset": {"pattern": NAME_PATTERN}}},
        {"not": _present("dataset_version", "integer")}]})

    kind: Literal["train"]
    model: Name = Field(description="architecture from the model registry, e.g. 'dcgan'")
    dataset: Name
    dataset_version: int | None = Field(None, ge=1, le=10**9)
    steps: int | None = Field(None, ge=1, le=10_000_000)
    batch_size: int | None = Field(None, ge=1, le=4096)
    resolution: int | None = Field(None, ge=8, le=1024)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    name: Annotated[str, Field(min_length=1, max_length=64,
                               json_schema_extra=NAME_SCHEMA)] | None = Field(
        None, description="model-store name for the result")
    config: dict[str, Any] = Field(default_factory=dict,
                                   description="run-config overrides (TrainConfig keys)")
    nproc: int = Field(1, ge=1, le=1024,
                       description="training processes on the worker (torchrun; batch_size "
                                   "is per process); at most the server's train_max_nproc")
    webhook: Webhook | None = Field(None, description="POSTed a JSON summary when the job ends")


class EvalJobIn(_Strict):
    kind: Literal["eval"]
    model: Name = Field(description="registered model: name or name:version")
    dataset: Name
    metrics: list[Literal["fid", "kid", "pr"]] | None = Field(None, max_length=3)
    n: int | None = Field(None, ge=1, le=100_000, description="generated samples")
    extractor: Literal["offline", "inception"] | None = None
    evaluator_steps: int | None = Field(None, ge=1, le=100_000,
                                        description="if the offline evaluator must be trained")
    webhook: Webhook | None = None


class ImportJobIn(_Strict):
    kind: Literal["import"]
    name: NewName
    path: str = Field(min_length=1, max_length=1024,
                      json_schema_extra={"pattern": IMPORT_PATH_PATTERN},
                      description="folder or archive inside $POLYCHROME_HOME/inbox "
                                  "(upload files with POST /api/datasets instead); one that "
                                  "is not there is 404")
    webhook: Webhook | None = None


JobIn = Annotated[TrainJobIn | EvalJobIn | ImportJobIn, Field(discriminator="kind")]


class JobOut(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    params: dict[str, Any]
    created: str | None
    started: str | None
    finished: str | None
    progress: float = Field(description="0..1")
    step: int
    total: int
    eta_seconds: float | None
    metrics: dict[str, Any] = Field(description="last logged values (losses, ...)")
    error: ErrorDetail | None
    result: dict[str, Any] | None
    run_dir: str | None
    cancel_requested: bool
    attempts: int = Field(description="claims by workers so far (each resume is one)")
    failures: int = Field(description="worker deaths blamed on the job (the rest of the "
                          "service stayed up); it fails at the server's limit")
    webhook: str | None
    webhook_status: str | None


class JobList(BaseModel):
    items: list[JobOut]


# -- the cascade: a result handed to a super-resolution model in the same request -------
UPSCALE_HELP = ("hand the result to a super-resolution model in the same request: the "
                "factor (2 or 4; one the upscaler was trained for). The answer is the larger "
                "picture; its metadata keeps the recipe and adds upscaled_by / upscale")
UPSCALER_HELP = ("the sr model (name or name:version) for `upscale`; default: the first "
                 "registered super-resolution model trained for that factor")


# -- generation ------------------------------------------------------------------------
class GenerateIn(_Strict):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"allOf": [UPSCALER_NEEDS_UPSCALE]})

    model: Name = Field(description="registered model: name or name:version")
    n: int = Field(1, ge=1, description="images; 1 answers image/png, more answer JSON")
    seed: int | None = Field(None, ge=0, le=2**53,
                             description="image i uses seed+i; omitted: a random seed")
    style: str | int | None = Field(None, description="style name or index; omitted: "
                                    "image i gets style (seed+i) mod styles")
    truncation: float = Field(1.0, ge=0.0, le=10.0)
    upscale: int | None = Field(None, ge=2, le=8, description=UPSCALE_HELP)
    upscaler: Name | None = Field(None, description=UPSCALER_HELP)


class ImageOut(BaseModel):
    id: int
    created: str
    model: str
    model_version: int
    style: str | None
    seed: int | None
    truncation: float | None
    width: int
    height: int
    metadata: dict[str, str]
    url: str


class GenerateOut(BaseModel):
    images: list[ImageOut]


class ImageList(BaseModel):
    items: list[ImageOut]
    next_cursor: int | None = Field(description="pass as ?cursor= for the next page")


# -- health ----------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Ready(BaseModel):
    ready: bool
    checks: dict[str, Any]


# -- style operations (routers/style.py) ---------------------------------------------------
# Multipart requests carry these as form fields (JSON-typed ones as JSON text) beside the
# image files; JSON requests carry them as the body.
StyleText = Annotated[str, Field(min_length=1, max_length=256)]
Seed = Annotated[int, Field(ge=0, le=2**53)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


SIZE_HELP = ("working size for models trained on crops (they run at the picture's own "
             "size): 'native' (the picture's own, capped by the server's native_max_side) or "
             "N, the longer side in pixels; models that draw a whole picture at their "
             "resolution ignore it")


def _size(value: Any) -> Any:
    """'native' / '' / None -> 'native'; '512' / 512 -> 512; anything else -> a clear error."""
    if value is None:
        return "native"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "native"):
            return "native"
        if text.isascii() and text.isdigit() and len(text) <= 9:
            value = int(text)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 8:
        return value
    raise ValueError(f"size must be 'native' or the longer side in pixels (an integer >= 8), "
                     f"got {value!r}")


# The server's cap (native_max_side) is checked when the request runs (400 too_large).
Size = Annotated[Annotated[int, Field(ge=8)] | Literal["native"], BeforeValidator(_size),
                 Field(description=SIZE_HELP)]


class RestyleIn(_Strict):
    # Multipart only: a target style or a reference picture (both: `style` names the
    # reference's style).
    FORM_RULES: ClassVar[list[dict[str, Any]]] = [
        {"anyOf": [{"required": ["style"]}, {"required": ["reference"]}]},
        FORM_UPSCALER_NEEDS_UPSCALE]

    model: Name = Field(description="registered translation model: name or name:version")
    style: StyleText | None = Field(None, description="target style: a learned style name or "
                                    "index, bank:NAME or seed:N (or the reference's style)")
    reference_style: StyleText | None = Field(None, description="style of the reference "
                                              "picture (default: guessed)")
    strength: Unit = Field(1.0, description="0 = the source's own style, 1 = the target")
    seed: Seed | None = Field(None, description="variation k uses seed+k; omitted: random")
    variations: int = Field(1, ge=1, le=64, description="1 answers image/png, more JSON; "
                            "more than 1 needs a learned style, not a reference picture")
    pixel_blend: Unit | None = Field(None, description="fade pixels: (1-b) x + b G(x, s)")
    size: Size = "native"
    upscale: int | None = Field(None, ge=2, le=8, description=UPSCALE_HELP)
    upscaler: Name | None = Field(None, description=UPSCALER_HELP)


class MixIn(_Strict):
    # JSON carries no pictures: weights over styles, at least one.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": [
        {"required": ["weights"], "properties": {"weights": SOME_POSITIVE,
                                                 "reference_weights": {"maxItems": 0}}}]})
    # Multipart: weights and / or reference pictures, none negative (the weights of the
    # pictures, one each, and that one weight is positive are in the descriptions).
    FORM_RULES: ClassVar[list[dict[str, Any]]] = [
        {"properties": {"weights": _NOT_NEGATIVE,
                        "reference_weights": {"items": {"minimum": 0}}}},
        {"anyOf": [{"required": ["weights"], "properties": {"weights": {"minProperties": 1}}},
                   {"required": ["reference"]}]}]

    model: Name
    weights: dict[StyleText, float] = Field(default_factory=dict, max_length=16,
                                            description='weights over styles, e.g. '
                                            '{"ink": 0.7, "neon": 0.3} (normalised to sum 1)')
    reference_weights: list[float] = Field(default_factory=list, max_length=8,
                                           description="multipart: one weight per uploaded "
                                           "'reference' file, in order (default 1 each); "
                                           "no weight negative, one of all positive")
    reference_style: StyleText | None = None
    seed: Seed | None = None
    strength: Unit = 1.0
    pixel_blend: Unit | None = None
    crossover: int | None = Field(None, ge=0, le=64, description="stylegan: per-layer mix of "
                                  "exactly 2 styles at this layer")
    size: Size = "native"
    save: bool = Field(True, description="record the result in the gallery (live previews "
                       "while a slider moves pass false)")


class InterpolateIn(_Strict):
    # JSON carries no pictures: both ends are styles.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={
        "allOf": [_present("from", "string"), _present("to", "string")]})
    # Multipart: each end is a style or a reference picture, not both.
    FORM_RULES: ClassVar[list[dict[str, Any]]] = [_one_of_form("from", "from_reference"),
                                                  _one_of_form("to", "to_reference")]

    model: Name
    from_: StyleText | None = Field(None, alias="from", description="start: a style, "
                                    "bank:NAME or seed:N (or upload 'from_reference')")
    to: StyleText | None = Field(None, description="end (or upload 'to_reference')")
    frames: int = Field(8, ge=2, le=64)
    seed: Seed = 0
    style: StyleText | None = Field(None, description="pins the style of seed:N and "
                                    "reference endpoints")
    fps: float = Field(8.0, ge=0.25, le=50.0, description="frames a second (a GIF holds a "
                       "frame at most 655 s, identical frames merged into one)")
    scale: int = Field(1, ge=1, le=16, description="pixel repeat, so tiny models are visible")
    pingpong: bool = False
    size: Size = "native"


class StyleSessionIn(_Strict):
    """Multipart: `model` and the `image` file."""

    model: Name = Field(description="registered translation model: name or name:version")


class StyleReferenceIn(_Strict):
    """Multipart: just the `reference` file."""


class StyleSessionOut(BaseModel):
    session: str = Field(description="id for /api/restyle/sessions/{id}/render")
    model: str = Field(description="name:version the session is bound to")
    family: str
    styles: list[str]
    source_sha256: str = Field(description="sha256 of the pixels the previews restyle (the "
                               "model's size, or the preview size of a native model)")
    resolution: int
    references: list[str] = Field(description="ids ('ref:<sha256>') usable as styles")
    native: bool = Field(description="the model runs at the picture's own size (trained on "
                         "crops): /render draws a preview, /full the full size; otherwise "
                         "the model draws at resolution x resolution either way")
    width: int = Field(description="the uploaded picture's width")
    height: int = Field(description="the uploaded picture's height")
    preview_width: int | None = Field(description="native models: width of /render's previews")
    preview_height: int | None = Field(description="native models: height of the previews")
    max_side: int | None = Field(description="native models: the longest side /full renders "
                                 "(native_max_side)")


class StyleReferenceOut(BaseModel):
    reference: str = Field(description="use as a style: 'ref:<sha256>'")
    sha256: str
    label: str


# A blend's weights (or none).
_WEIGHTS = {"properties": {"weights": {"anyOf": [{"type": "null"}, SOME_POSITIVE]}}}
# (json_schema_extra replaces top-level keys: rules go in allOf, beside the fields.)


class RenderIn(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [_present("style", "string"), _present("weights", "object")],
        "allOf": [_WEIGHTS]})

    style: StyleText | None = Field(None, description="one style, bank:NAME, seed:N or a "
                                    "session reference id 'ref:<sha256>'")
    weights: dict[StyleText, float] | None = Field(None, max_length=16,
                                                   description="a blend instead of `style`")
    reference_style: StyleText | None = None
    strength: Unit = 1.0
    seed: Seed = 0
    pixel_blend: Unit | None = None
    save: bool = Field(True, description="record the result in the gallery (live previews "
                       "while a slider moves pass false)")


class FullRenderIn(RenderIn):
    """The session's recipe at full size; style and weights omitted: the last /render's."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "not": {"allOf": [_present("style", "string"), _present("weights", "object")]},
        "allOf": [UPSCALER_NEEDS_UPSCALE, _WEIGHTS]})

    size: Size = "native"
    save: bool = Field(True, description="record the result in the gallery")
    upscale: int | None = Field(None, ge=2, le=8, description=UPSCALE_HELP)
    upscaler: Name | None = Field(None, description=UPSCALER_HELP)


# -- restoration (routers/restore.py) ------------------------------------------------------
class RestoreIn(_Strict):
    """Multipart fields beside the `image` file (and, for inpainting, the `mask` file)."""

    # Inpainting needs a `mask` (and only inpainting takes one; without `task`, the
    # model's own task decides).
    FORM_RULES: ClassVar[list[dict[str, Any]]] = [
        {"anyOf": [{"properties": {"task": {"enum": ["sr", "colorize"]}}},
                   {"properties": {"task": False}}, {"required": ["mask"]}]}]

    model: Name = Field(description="registered restoration model (pix2pix): name or "
                        "name:version")
    task: Literal["sr", "inpaint", "colorize"] | None = Field(
        None, description="what to do; default: the model's own task (another one is "
        "refused)")
    scale: int | None = Field(None, ge=1, le=8, description="sr: the upscaling factor, one "
                              "the model was trained for (default: its largest)")
    save: bool = Field(True, description="record the result in the gallery")


class PresetOut(BaseModel):
    name: str
    label: str
    description: str
    steps: int
    resolution: int
    batch_size: int
    width_factor: float
    config: dict[str, Any]


class EstimateIn(_Strict):
    model: Name = Field(description="architecture, e.g. 'dcgan'")
    dataset: Name
    preset: Literal["quick", "standard", "quality"] = "quick"
    steps: int | None = Field(None, ge=1, le=10_000_000)
    resolution: int | None = Field(None, ge=8, le=1024)
    batch_size: int | None = Field(None, ge=1, le=4096)
    config: dict[str, Any] = Field(default_factory=dict, description="run-config overrides as "
                                   "a train job's (e.g. crop, model_config); model_config is "
                                   "merged into the preset's")


# -- path parameters -------------------------------------------------------------------
def ref_path(what: str) -> Any:
    """A path parameter naming a stored dataset or model: name or name:version."""
    from fastapi import Path

    return Path(description=f"the {what}: name or name:version",
                json_schema_extra=dict(REF_SCHEMA))


def name_path(what: str) -> Any:
    """A path parameter naming a stored dataset or model (no version)."""
    from fastapi import Path

    return Path(description=f"the {what}'s name", json_schema_extra=dict(NAME_SCHEMA))

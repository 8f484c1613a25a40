"""Settings from the environment (`POLYCHROME_*`) with documented defaults."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from .errors import ConfigError
from .registry import did_you_mean

# The runtimes that can run a model's networks (polychrome.runtime; named here so that
# settings are checked without importing torch).
RUNTIMES = ("torch", "onnx")


def _default_home() -> Path:
    return Path.home() / ".polychrome"


class Settings(BaseSettings):
    """All state lives under `home` (env `POLYCHROME_HOME`, default ~/.polychrome).

    Several machines share one deployment by pointing `database_url` at PostgreSQL,
    `queue_url` at Redis and `storage_root` at a filesystem they all mount (datasets, runs,
    models, gallery, live sessions); each machine keeps its own `home` (settings, the local
    SQLite files when no URL is given) and `cache_dir` (packed training caches, scratch).
    """

    model_config = SettingsConfigDict(env_prefix="POLYCHROME_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    # "" = the embedded SQLite file <home>/db.sqlite (WAL); or a SQLAlchemy URL such as
    # postgresql+psycopg://user:password@host:5432/polychrome (the `scale` extra).
    database_url: str = ""
    # Shared files (datasets, runs, models, gallery, sessions); None = home.
    storage_root: Path | None = None
    # Per-machine caches (packed training caches, derived inputs); None = <home>/cache.
    cache_dir: Path | None = None
    # Safe decoder: cap on width*height read from the header, before decoding.
    max_pixels: int = 40_000_000
    # Archive caps (per member, whole archive, member count, compression ratio).
    max_member_bytes: int = 64 * 1024 * 1024
    max_archive_bytes: int = 4 * 1024 * 1024 * 1024
    max_members: int = 100_000
    max_compression_ratio: float = 200.0
    # Path to Inception weights for standard FID (no download here).
    inception_weights: Path | None = None
    # The bar an evaluator must clear before FID/KID/PR are reported (metrics/instrument.py):
    # held-out accuracy of its classifier at least max(chance + margin, min accuracy), overall
    # and for every style; blurred, noised and other-style images at least min_separation
    # times the real-vs-real floor away.
    eval_accuracy_margin: float = Field(default=0.2, ge=0.0, le=1.0)
    eval_min_accuracy: float = Field(default=0.5, ge=0.0, le=1.0)
    eval_min_separation: float = Field(default=3.0, ge=1.0)
    # Register the default models that ship with the package on first use of a home.
    bundled_models: bool = True
    # Pictures at their own size (crops-mode translators): the default working size is
    # the picture's own, with its longer side capped here; an explicit size may not exceed it.
    native_max_side: int = 4096
    # Tiling engine (pipelines/tiling.py): above tile_max_pixels a picture runs in tiles of
    # tile_side (memory stays bounded); normalisation statistics come from one pass over
    # the whole picture, downscaled to tile_stats_max_pixels when it is larger.
    # Each tile is run with tile_context more of the picture around it (dropped after):
    # it covers the generator's reach, so tiles agree with a whole pass.
    tile_max_pixels: int = 2_097_152
    tile_side: int = 768
    tile_context: int = 128
    tile_stats_max_pixels: int = 2_097_152

    # -- `polychrome serve` / `polychrome worker` ------------------------------------
    host: str = "127.0.0.1"  # loopback by default: exposing the API is a deliberate choice
    port: int = 8765
    workers: int = 1  # job worker processes spawned by `serve`
    max_body_bytes: int = 512 * 1024 * 1024  # request body cap (413 above it)
    # Comma-separated API keys; empty = no authentication (loopback use).
    api_keys: str = ""
    rate_limit: int = 0  # requests per minute per API key (or client); 0 = unlimited
    queue_max: int = 100  # queued jobs above this -> 503
    pipeline_cache_size: int = 4  # warm models per server process (LRU)
    session_ttl_s: float = 86400.0  # live restyle sessions unused this long leave storage
    generate_timeout_s: float = 60.0  # synchronous generation -> 504 after this
    generate_max_n: int = 64  # images per /api/generate request
    batching: bool = True  # dynamic micro-batching of concurrent generate requests
    batch_wait_ms: float = 5.0  # how long a batch waits for more requests
    batch_max: int = 64  # images per micro-batch forward
    # Which runtime runs the models' networks in the API (polychrome.runtime): "torch" or
    # "onnx" (ONNX Runtime on the CPU; the `onnx` extra). `runtime_models` overrides it per
    # registered model name: a comma-separated NAME=RUNTIME list (or a mapping in the file).
    runtime: str = "torch"
    runtime_models: str = ""
    # Torch intra-op threads in the web process: requests already run in parallel, and
    # several threads per tiny forward oversubscribe the cores (0 = torch's default).
    inference_threads: int = 1
    # -- load shedding (serving/admission.py): inference requests one API process runs at
    # once (0 = 4 per CPU core, at least 4) and that wait for a slot beyond them (-1 = 3 x
    # max_inflight); one more is refused at once with 503 `overloaded` and Retry-After.
    max_inflight: int = Field(default=0, ge=0)
    max_waiting: int = Field(default=-1, ge=-1)
    queue_url: str = ""  # "" = SQLite queue in home; "redis://..." for several machines
    job_lease_s: float = 30.0  # a worker that misses this many seconds of heartbeat loses its job
    job_progress_interval_s: float = 1.0  # throttle for progress writes to the Job row
    worker_poll_s: float = 0.5  # idle worker poll interval
    train_max_nproc: int = 8  # most processes one train job may ask for (its `nproc`)
    # -- job limits: a train job asking for more is refused (400) before it is queued
    max_model_params: int = Field(default=100_000_000, ge=1)  # all its networks, counted unbuilt
    train_max_steps: int = Field(default=10_000_000, ge=1)
    train_max_batch_size: int = Field(default=4096, ge=1)  # per process
    train_max_resolution: int = Field(default=1024, ge=8)  # pixels (the crop side in crops mode)
    train_max_eval_n: int = Field(default=50_000, ge=1)  # samples per periodic evaluation
    train_max_sample_cols: int = Field(default=32, ge=1)  # columns of the sample grids

    # -- request guards (serving/security.py, serving/jobs/webhook.py) -----------------
    # Host names the API answers to, comma-separated ("*" = any, "*.example.org" = its
    # subdomains); loopback names, the bound host and the address a connection arrived at
    # always pass. Behind a proxy that passes Host through, list the names clients use.
    allowed_hosts: str = ""
    # Origins (scheme://host[:port]) besides the API's own from which a browser may send
    # state-changing requests (comma-separated; "*" = any). Requests without an Origin or
    # Referer header (CLI, scripts, the Python client) are not checked.
    allowed_origins: str = ""
    # `serve` refuses a non-loopback --host without api_keys unless this is set.
    insecure_public: bool = False
    # Webhooks post only to public addresses; these hosts and IPs / CIDRs too (comma-separated).
    webhook_allow: str = ""
    header_timeout_s: float = 30.0  # the request line and headers must arrive in this (408)
    body_timeout_s: float = 60.0  # longest wait for the next chunk of a request body (408)

    @field_validator("api_keys", "allowed_hosts", "allowed_origins", "webhook_allow",
                     mode="before")
    @classmethod
    def _keys_from_list(cls, v: Any) -> Any:
        # A config file may list keys (or hosts); the environment gives a comma-separated
        # string.
        if isinstance(v, list | tuple):
            return ",".join(str(k) for k in v)
        return v

    @field_validator("runtime_models", mode="before")
    @classmethod
    def _runtime_pairs(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return ",".join(f"{k}={r}" for k, r in v.items())
        return v

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, v: str) -> str:
        if v.strip().lower() not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {v!r}")
        return v.strip().lower()

    @field_validator("runtime_models")
    @classmethod
    def _known_runtime_models(cls, v: str) -> str:
        for item in filter(None, (p.strip() for p in v.split(","))):
            name, sep, runtime = item.partition("=")
            if not sep or not name.strip() or runtime.strip().lower() not in RUNTIMES:
                raise ValueError(f"runtime_models entries are NAME=RUNTIME with RUNTIME one of "
                                 f"{', '.join(RUNTIMES)}, got {item!r}")
        return v

    def runtime_for(self, name: str | None) -> str:
        """The runtime of registered model `name` (its override, else `runtime`)."""
        for item in filter(None, (p.strip() for p in self.runtime_models.split(","))):
            key, _, runtime = item.partition("=")
            if name is not None and key.strip() == name:
                return runtime.strip().lower()
        return self.runtime

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments > environment > $POLYCHROME_HOME/config.{toml,yaml}.
        home = Path(os.environ.get("POLYCHROME_HOME") or _default_home())
        files: list[PydanticBaseSettingsSource] = []
        if (home / "config.toml").is_file():
            toml = TomlConfigSettingsSource(settings_cls, home / "config.toml")
            _check_file_keys(settings_cls, toml.toml_data, home / "config.toml")
            files.append(toml)
        for name in ("config.yaml", "config.yml"):
            if (home / name).is_file():
                yaml = YamlConfigSettingsSource(settings_cls, home / name)
                _check_file_keys(settings_cls, yaml.yaml_data, home / name)
                files.append(yaml)
        return (init_settings, env_settings, dotenv_settings, *files, file_secret_settings)

    @property
    def db_path(self) -> Path:
        return self.home / "db.sqlite"

    @property
    def db_url(self) -> str:
        """The database this process uses: `database_url`, else the embedded SQLite file."""
        return self.database_url.strip() or f"sqlite:///{self.db_path}"

    @property
    def storage(self) -> Path:
        """The root every stored path (dataset, run, model, gallery file) is relative to."""
        return self.storage_root if self.storage_root is not None else self.home

    @property
    def cache(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.home / "cache"

    @property
    def datasets_dir(self) -> Path:
        return self.storage / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.storage / "runs"

    @property
    def models_dir(self) -> Path:
        return self.storage / "models"

    @property
    def gallery_dir(self) -> Path:
        return self.storage / "gallery"

    @property
    def sessions_dir(self) -> Path:
        """Live restyle sessions (upload, references, recipe): any replica can rebuild one."""
        return self.storage / "sessions"

    @property
    def uploads_dir(self) -> Path:
        return self.storage / "uploads"

    @property
    def inbox_dir(self) -> Path:
        return self.storage / "inbox"

    @property
    def tmp_dir(self) -> Path:
        """Scratch space on the storage root, so renames into place are atomic (and request
        bodies spool here, never to the system's /tmp)."""
        return self.storage / "tmp"

    def stored(self, path: str | Path) -> Path:
        """A path as kept in the database (relative to the storage root) made absolute."""
        p = Path(path)
        return p if p.is_absolute() else self.storage / p

    def to_stored(self, path: str | Path) -> str:
        """The database form of a path: relative to the storage root when it lies inside."""
        p = Path(path)
        try:
            return p.resolve().relative_to(self.storage.resolve()).as_posix()
        except ValueError:
            return str(p)

    def ensure_dirs(self) -> None:
        for d in (self.home, self.storage, self.datasets_dir, self.runs_dir, self.models_dir,
                  self.gallery_dir, self.tmp_dir, self.cache):
            d.mkdir(parents=True, exist_ok=True)


def _check_file_keys(settings_cls: type[BaseSettings], data: Any, path: Path) -> None:
    """A settings file may only hold settings: a misspelt key would otherwise be dropped
    without a word (the environment is not checked: other POLYCHROME_* variables exist)."""
    if not isinstance(data, dict):
        return  # pydantic reports a file that is not a mapping
    fields = sorted(settings_cls.model_fields)
    for key in data:
        if str(key).lower() not in fields:
            raise ConfigError(f"unknown setting {key!r} in {path}"
                              f"{did_you_mean(str(key).lower(), fields)}; valid settings: "
                              f"{', '.join(fields)}")


@lru_cache(maxsize=16)
def _settings_for(env: tuple[tuple[str, str], ...]) -> Settings:
    return Settings()


def get_settings() -> Settings:
    """Settings for the current environment (re-read whenever a POLYCHROME_* variable changes)."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("POLYCHROME_")))
    return _settings_for(env)

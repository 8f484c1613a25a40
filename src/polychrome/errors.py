"""The one exception family. Surfaces map these to a one-line message or a 4xx."""

from __future__ import annotations


class PolychromeError(Exception):
    """Base of every error a user can cause or needs to read.

    `code` is a short machine-readable reason; str(error) is a one-line message.
    """

    code: str = "error"
    http_status: int = 400

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class ImageRejected(PolychromeError):
    """An image that the safe decoder refuses.

    `code` is one of: corrupt, unsupported, too_large, too_small, unsafe.
    """

    code = "corrupt"
    http_status = 422


class DatasetError(PolychromeError):
    code = "dataset_error"


class UnsafeArchive(DatasetError):
    code = "unsafe"


class NotFound(PolychromeError):
    code = "not_found"
    http_status = 404


class ModelError(PolychromeError):
    code = "model_error"


class ConfigError(PolychromeError):
    code = "config_error"


class CheckpointError(PolychromeError):
    code = "checkpoint_error"


class TrainingError(PolychromeError):
    code = "training_error"


class QueueFull(PolychromeError):
    code = "queue_full"
    http_status = 503


class JobStateError(PolychromeError):
    """An action that the job's current state does not allow (e.g. cancel a finished job)."""

    code = "job_state"
    http_status = 409

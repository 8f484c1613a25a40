"""polychrome.client against a real server process (with a job worker and tiny models)."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from polychrome.client import (
    APIError,
    Client,
    Conflict,
    JobEvent,
    Picture,
    ServiceUnavailable,
    raise_for_error,
)
from polychrome.errors import (
    ConfigError,
    ImageRejected,
    JobStateError,
    NotFound,
    PolychromeError,
)
from polychrome.serving.errors import BadRequest, RateLimited, Unauthorized
from polychrome.serving.schemas import ImageOut, JobOut

from .live import NATIVE_META, NATIVE_STARGAN, png_bytes, register_tiny, shapes_zip, start_server

STYLES = ["ink", "neon", "pastel"]
P2P = dict(resolution=32, width=8, max_width=16, n_down=2, n_blocks=1, d_width=8)
TRAIN_CONFIG = {"model_config": {"width": 8, "z_dim": 16}, "log_every": 1, "sample_every": 2}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    home = tmp_path_factory.mktemp("client") / "home"
    home.mkdir()
    register_tiny(home, "stargan", "st", STYLES, meta=NATIVE_META, **NATIVE_STARGAN)
    register_tiny(home, "dcgan", "dc", STYLES, resolution=16, width=8, z_dim=16, num_domains=3)
    register_tiny(home, "pix2pix", "sr", [], task="sr", scales=[2], **P2P)
    server = start_server(home, workers=1)
    yield server
    server.stop()


@pytest.fixture
def api(live):
    with Client(live.url, timeout=60) as c:
        yield c


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_health_models_and_not_found(api):
    assert api.health().status == "ok"
    assert api.ready().checks["database"] == "ok"
    assert "polychrome_http_requests_total" in api.metrics()
    models = {m.name: m for m in api.models()}
    assert models["st"].family == "translation" and models["st"].styles == STYLES
    assert models["sr"].task == "sr" and models["sr"].scales == [2]
    assert api.model("dc:1").arch == "dcgan"
    assert {"dcgan", "stargan"} <= {a.name for a in api.architectures()}
    assert [p.name for p in api.presets("dcgan")] == ["quick", "standard", "quality"]
    assert _size(api.model_samples("dc", cols=2))[0] > 0
    with pytest.raises(NotFound) as e:
        api.model("nope")
    assert e.value.status == 404 and e.value.code == "not_found" and "nope" in str(e.value)
    with pytest.raises(BadRequest) as e:
        api.model("not a name")
    assert e.value.code == "bad_name"
    with pytest.raises(NotFound) as e:
        api.model_samples("st")  # only noise models have a grid
    assert e.value.code == "wrong_family"


def test_generate_gallery_and_regenerate(api):
    one = api.generate("dc", seed=7, style="neon")
    assert len(one) == 1 and isinstance(one[0], Picture)
    picture = one[0]
    assert picture.image_id and picture.metadata["seed"] == "7"
    assert picture.array().shape == (16, 16, 3)
    two = api.generate("dc", n=2, seed=9)
    assert [p.metadata["seed"] for p in two] == ["9", "10"]
    info = api.image(picture.image_id)
    assert isinstance(info, ImageOut) and info.style == "neon"
    assert api.image_png(picture.image_id) == picture.png
    assert picture.image_id in [i.id for i in api.images(model="dc", limit=10).items]
    again = api.regenerate(picture.image_id)
    assert again.png == picture.png and again.metadata["identical"] == "true"
    api.delete_image(two[1].image_id)
    with pytest.raises(NotFound):
        api.image(two[1].image_id)
    with pytest.raises(NotFound):
        api.generate("nope")
    with pytest.raises(BadRequest) as e:
        api.generate("dc", n=10_000)
    assert e.value.status == 400


def test_style_routes_and_restoration(api, tmp_path):
    path = tmp_path / "in.png"
    path.write_bytes(png_bytes(24))
    restyled = api.restyle("st", path, style="ink", seed=1)  # a path, or bytes, or a file
    assert len(restyled) == 1 and restyled[0].metadata["op"] == "restyle"
    assert _size(restyled[0].png) == (24, 24)  # a native model keeps the picture's size
    with open(path, "rb") as f:
        variations = api.restyle("st", f, style="neon", variations=2, seed=3)
    assert len(variations) == 2 and all(v.image_id for v in variations)
    like = api.restyle("st", png_bytes(24), reference=png_bytes(20, seed=1))
    assert like[0].metadata["op"] == "restyle"
    blend = api.mix("dc", {"ink": 0.7, "neon": 0.3}, seed=2)  # a noise model: JSON
    assert blend.metadata["op"] == "mix" and blend.image_id
    preview = api.mix("st", {"ink": 1}, image=png_bytes(16),
                      references=[png_bytes(16, seed=2)], reference_weights=[2], save=False)
    assert preview.image_id is None  # not saved
    gif = api.interpolate("dc", "ink", "pastel", frames=3, fps=4)
    assert gif[:3] == b"GIF"
    gif = api.interpolate("st", "ink", image=png_bytes(16), to_reference=png_bytes(16, seed=4),
                          frames=2)
    assert gif[:3] == b"GIF"
    larger = api.restore("sr", png_bytes(16))
    assert _size(larger.png) == (32, 32) and larger.metadata["task"] == "sr"
    with pytest.raises(ImageRejected) as e:
        api.restyle("st", b"not a picture at all", style="ink")
    assert e.value.status == 422 and e.value.code in ("unsupported", "corrupt")
    with pytest.raises(BadRequest) as e:
        api.restyle("st", png_bytes(16), style="no-such-style")
    assert e.value.code == "unknown_style"


def test_live_session(api):
    with api.open_session("st", png_bytes(32)) as session:
        assert session.info.native and session.info.styles == STYLES
        with pytest.raises(BadRequest) as e:  # nothing rendered yet: no recipe to repeat
            session.full()
        assert e.value.code == "missing_style"
        preview = session.render("ink", save=False)
        assert preview.image_id is None and preview.metadata["session"] == session.id
        ref = session.add_reference(png_bytes(16, seed=5))
        assert ref.reference.startswith("ref:")
        blended = session.render(weights={"ink": 1, ref.reference: 1}, seed=4)
        assert blended.image_id
        full = session.full()  # the last render's recipe at full size
        assert _size(full.png) == (32, 32) and full.image_id
        assert ref.reference in session.refresh().references
        same = api.session(session.id)
        assert same.id == session.id
    with pytest.raises(NotFound):
        api.session(session.id)


def test_datasets_and_jobs_with_progress_events(api, tmp_path):
    job = api.upload_dataset("shapes", shapes_zip(tmp_path, n=8, size=32))
    assert isinstance(job, JobOut) and job.kind == "import"
    assert api.wait(job.id, timeout=120).state == "succeeded"
    assert "shapes" in [d.name for d in api.datasets()]
    info = api.dataset("shapes")
    assert info.images and info.domains
    assert api.dataset_report("shapes")
    assert _size(api.dataset_preview("shapes", per_domain=2))[0] > 0

    with pytest.raises(ConfigError) as e:
        api.train("dcgan", "shapes", steps=2, config={"no_such_key": 1})
    assert e.value.status == 400
    with pytest.raises(NotFound):
        api.train("dcgan", "no-such-dataset", steps=2)

    job = api.train("dcgan", "shapes", steps=4, resolution=16, batch_size=8,
                    config=TRAIN_CONFIG)
    events = list(api.events(job.id, timeout=120))
    assert all(isinstance(e, JobEvent) for e in events)
    kinds = [e.event for e in events]
    assert kinds[0] == "state" and kinds[-1] == "end" and "progress" in kinds
    done = events[-1].job
    assert done.state == "succeeded" and done.step == 4
    progress = [e.data["progress"] for e in events if e.event == "progress"]
    assert progress == sorted(progress)  # it only moves forward
    assert api.job(job.id).state == "succeeded"
    assert job.id in [j.id for j in api.jobs(kind="train")]
    samples = api.job_samples(job.id)
    assert samples and _size(api.job_sample(job.id, samples[-1]))[0] > 0
    with pytest.raises(JobStateError) as e:  # finished: nothing to cancel
        api.cancel_job(job.id)
    assert e.value.status == 409 and e.value.code == "job_state"
    with pytest.raises(NotFound):
        api.job("0" * 32)
    assert api.delete_dataset("shapes") == [1]


# -- error answers -> exceptions, without a server -------------------------------------------
def _answer(status: int, body: object = None, headers: dict | None = None,
            text: str | None = None) -> httpx.Response:
    content = text.encode() if text is not None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers or {},
                          request=httpx.Request("GET", "http://x/api"))


def _error(status: int, code: str, headers: dict | None = None) -> PolychromeError:
    with pytest.raises(PolychromeError) as e:
        raise_for_error(_answer(status, {"error": {"code": code, "message": f"m {code}"}},
                                headers))
    assert e.value.status == status and e.value.code == code and str(e.value) == f"m {code}"
    return e.value


@pytest.mark.parametrize("status, code, cls", [
    (400, "bad_request", BadRequest), (400, "config_error", ConfigError),
    (401, "unauthorized", Unauthorized), (404, "not_found", NotFound),
    (409, "job_state", JobStateError), (409, "missing_style", Conflict),
    (422, "corrupt", ImageRejected), (422, "invalid_request", BadRequest),
    (503, "overloaded", ServiceUnavailable), (403, "cross_origin", APIError),
    (405, "method_not_allowed", APIError), (500, "internal_error", APIError),
])
def test_error_answers_raise_the_projects_exceptions(status, code, cls):
    assert type(_error(status, code)) is cls


def test_retry_after_and_bodies_that_are_not_the_error_shape():
    limited = _error(429, "rate_limited", {"Retry-After": "7"})
    assert isinstance(limited, RateLimited) and limited.retry_after == 7
    assert _error(503, "queue_full", {"Retry-After": "3"}).retry_after == 3
    with pytest.raises(APIError) as e:
        raise_for_error(_answer(502, text="<html>bad gateway</html>"))
    assert e.value.status == 502 and "bad gateway" in str(e.value)
    raise_for_error(_answer(200, {"ok": True}))  # not an error: nothing raised


def test_api_key_is_sent():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-api-key"))
        return httpx.Response(200, json={"status": "ok", "version": "0"})

    with Client("http://x", api_key="k1", transport=httpx.MockTransport(handler)) as c:
        assert c.health().version == "0"
    assert seen == ["k1"]


def test_pictures_decode_and_save(tmp_path):
    arr = np.zeros((4, 6, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    p = Picture(buf.getvalue(), None, {})
    assert p.array().shape == (4, 6, 3)
    assert p.save(tmp_path / "x.png").read_bytes() == buf.getvalue()

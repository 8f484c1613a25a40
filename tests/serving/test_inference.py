"""Warm-model cache and micro-batching: batched answers are bit-identical to unbatched ones."""

from __future__ import annotations

import asyncio

import pytest
import torch

from polychrome.errors import NotFound, PolychromeError
from polychrome.models import create_model
from polychrome.persistence.models import add_model_version
from polychrome.pipelines.generate import generate
from polychrome.serving.inference import GenRequest, MicroBatcher, PipelineCache
from polychrome.serving.observability import Metrics

ARCHS = {
    "dcgan": {"resolution": 16, "width": 8, "z_dim": 16},
    "stylegan": {"resolution": 16, "width": 8, "z_dim": 16, "w_dim": 16, "mapping_layers": 2},
}


def _register(tmp_path, name: str, seed: int, arch: str = "dcgan") -> None:
    torch.manual_seed(seed)
    model = create_model(arch, num_domains=2, **ARCHS[arch])
    model.meta["styles"] = ["ink", "paint"]
    model.save_pretrained(tmp_path / name)
    add_model_version(tmp_path / name, name)


def _counter(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def test_cache_loads_once_evicts_lru_and_refuses_paths(tmp_path):
    _register(tmp_path, "a", 0)
    _register(tmp_path, "b", 1)
    metrics = Metrics()
    cache = PipelineCache(1, "cpu", metrics)
    first = cache.get("a")
    assert cache.get("a:1") is first  # same version, same warm model
    assert _counter(metrics, "polychrome_pipeline_cache_hits_total") == 1
    cache.get("b")
    assert cache.keys() == ["b:1"]  # "a" was evicted
    assert cache.get("a") is not first
    assert _counter(metrics, "polychrome_pipeline_cache_misses_total") == 3
    with pytest.raises(NotFound):
        cache.get(str(tmp_path / "a"))  # a model directory path: never from the API
    with pytest.raises(NotFound):
        cache.get("missing")


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_micro_batched_generation_is_bit_identical_to_unbatched(tmp_path, arch):
    _register(tmp_path, "m", 0, arch)
    metrics = Metrics()
    loaded = PipelineCache(2, "cpu", metrics).get("m")
    truncation = 0.7 if arch == "stylegan" else 1.0
    reqs = [GenRequest(n=1 + i % 3, seed=1000 * i, style=[None, "paint", 0][i % 3],
                       truncation=truncation) for i in range(8)]
    bad = GenRequest(n=1, seed=0, style="cubist", truncation=truncation)

    async def run(batch):
        batcher = MicroBatcher(wait_ms=300, max_images=64, device="cpu", metrics=metrics)
        try:
            return await asyncio.gather(*(batcher.submit(loaded, r) for r in batch),
                                        return_exceptions=True)
        finally:
            await batcher.close()

    # The first batch of a size is checked against per-image forwards, the second
    # uses whatever that check decided; the third is forced down the per-image path
    # (what a model that failed the check gets).
    for attempt in range(3):
        if attempt == 2:
            assert 16 in loaded.planner.exact
            loaded.planner.exact = {16: False}
        results = asyncio.run(run([*reqs, bad]))
        assert isinstance(results[-1], PolychromeError) and results[-1].code == "unknown_style"
        for req, got in zip(reqs, results[:-1], strict=True):
            want = generate(loaded.model, req.n, seed=req.seed, style=req.style,
                            truncation=req.truncation, device="cpu")
            assert [g.metadata for g in got] == [w.metadata for w in want]
            for g, w in zip(got, want, strict=True):
                assert g.array.tobytes() == w.array.tobytes()
    # 16 images were gathered into one batch (fewer batches than requests), and the
    # planner decided for that bucket size.
    batches = metrics.registry.get_sample_value("polychrome_generate_batch_requests_count")
    assert batches is not None and batches < 3 * len(reqs)

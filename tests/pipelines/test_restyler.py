"""Restyler on label-conditioned noise models: blends are soft labels, safe on a shared model.

The REST API serves every request from one cached model, so a blend must not change
what a concurrent plain generation (or another blend) on the same model produces.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from polychrome.models import create_model
from polychrome.pipelines import generate
from polychrome.pipelines.style import Restyler, mix
from polychrome.pipelines.style_codes import style_family

STYLES = ["ink", "neon", "pastel"]
TINY = {  # 16 px, a few channels: a forward is ~1 ms, so the threads overlap a lot
    "dcgan": {"z_dim": 8, "width": 8, "max_channels": 16, "label_dim": 4},
    "cgan": {"z_dim": 8, "width": 8, "max_channels": 16},
}


def _tiny(arch: str):
    torch.manual_seed(0)
    model = create_model(arch, resolution=16, num_domains=3, **TINY[arch])
    with torch.no_grad():  # as after training: cgan's conditional BN starts style-blind
        for m in model.generator.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight.add_(0.5 * torch.randn_like(m.weight))
    model.meta["styles"] = list(STYLES)
    return model.eval()


# (kind, style or blend, seed): plain generations, two-style and three-style blends
JOBS = [
    ("generate", "ink", 3),
    ("blend", [("neon", 1.0), ("pastel", 1.0)], 3),
    ("generate", "pastel", 5),
    ("blend", [("ink", 3.0), ("neon", 1.0)], 5),
    ("blend", [("ink", 1.0), ("neon", 1.0), ("pastel", 2.0)], 7),
    ("generate", "neon", 7),
]


def _run(model, job) -> bytes:
    kind, style, seed = job
    if kind == "generate":
        return generate(model, 1, seed=seed, style=style)[0].array.tobytes()
    return Restyler(model).render(style, seed=seed, op="mix").array.tobytes()


@pytest.mark.parametrize("arch", sorted(TINY))
def test_concurrent_blends_on_one_shared_model_match_sequential_runs(arch):
    model = _tiny(arch)
    assert style_family(model) == "label"
    want = [_run(model, j) for j in JOBS]
    assert len(set(want)) == len(JOBS)  # every job is a different picture
    rounds, n_threads = 25, 4
    got: list[list[tuple[int, bytes]]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        try:
            start.wait()
            for r in range(rounds):
                i = (t + r) % len(JOBS)  # threads run different jobs at the same moment
                got[t].append((i, _run(model, JOBS[i])))
        except BaseException as e:  # surfaced below: a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    wrong = [(t, JOBS[i][:2]) for t, out in enumerate(got) for i, b in out if b != want[i]]
    assert sum(len(o) for o in got) == rounds * n_threads
    assert not wrong, f"{len(wrong)} outputs differ from the sequential run: {wrong[:3]}"
    # and the shared model is left as it was: a blend still reproduces afterwards
    assert [_run(model, j) for j in JOBS] == want


def test_a_blend_is_the_generator_on_a_soft_label():
    model = _tiny("dcgan")
    z = model.sample_z(1, generator=torch.Generator().manual_seed(4), device="cpu")
    soft = torch.tensor([[0.25, 0.75, 0.0]])  # ink 1 : neon 3
    with torch.inference_mode():
        want = model.generator(z, soft)
    got = mix(model, [("ink", 1.0), ("neon", 3.0)], seed=4)
    from polychrome.imageio import from_tensor

    assert np.array_equal(got.array, from_tensor(want[0]))
    # one style, given twice: exactly the plain generation (an int label, not a soft one)
    assert mix(model, [("neon", 1.0), ("neon", 2.0)], seed=4).array.tobytes() == \
        generate(model, 1, seed=4, style="neon")[0].array.tobytes()

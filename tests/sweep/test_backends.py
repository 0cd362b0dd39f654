"""The Ray backend asks for the resources a cell needs (a fake ``ray`` records them)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from capgap.sweep import backends


class _Ref:
    def __init__(self, value: Any) -> None:
        self.value = value


def _fake_ray(cluster: dict[str, float], asked: list[dict[str, Any]]) -> types.ModuleType:
    ray = types.ModuleType("ray")
    ray.is_initialized = lambda: True
    ray.cluster_resources = lambda: dict(cluster)

    def remote(**options: Any):  # noqa: ANN202 - mirrors ray.remote(**options)(fn)
        asked.append(options)

        def wrap(fn):  # noqa: ANN001, ANN202
            return types.SimpleNamespace(remote=lambda p: _Ref({"key": p["key"], "ran": True}))
        return wrap

    ray.remote = remote
    ray.wait = lambda pending, num_returns=1: (pending[:num_returns], pending[num_returns:])
    ray.get = lambda ref: ref.value
    return ray


@pytest.mark.parametrize(("cluster", "workers", "gpus"), [
    ({"CPU": 16.0, "GPU": 1.0}, 1, 1.0),
    ({"CPU": 16.0, "GPU": 1.0}, 4, 0.25),
    ({"CPU": 16.0, "GPU": 8.0}, 2, 1.0),
    ({"CPU": 2.0}, 2, None),
])
def test_ray_cells_ask_for_the_gpus_the_cluster_has(monkeypatch, cluster, workers, gpus):
    asked: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, "ray", _fake_ray(cluster, asked))
    results: list[dict[str, Any]] = []
    payloads = [{"key": f"c{i}", "threads": 2} for i in range(3)]
    backends.execute(payloads, workers=workers, backend="ray", on_start=lambda p: None,
                     on_result=results.append)
    assert [r["key"] for r in results] == ["c0", "c1", "c2"]
    assert asked[0]["num_cpus"] == 2
    assert asked[0].get("num_gpus") == gpus

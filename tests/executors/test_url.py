"""Executor URLs: one parser for dask:// and ray:// (pure: nothing connects)."""

from __future__ import annotations

import re

import pytest

from flowfed.executors import (
    ClusterExecutor,
    close_all,
    executor_from_url,
    is_cluster_url,
    parse_cluster_url,
)


@pytest.mark.parametrize(
    ("url", "scheme", "address", "options"),
    [
        ("dask://local", "dask", "local", {}),
        ("dask://local?workers=2&processes=0", "dask", "local", {"workers": "2", "processes": "0"}),
        ("dask://127.0.0.1:8786/", "dask", "127.0.0.1:8786", {}),
        ("dask://tls://sched:8786?inline_max=10", "dask", "tls://sched:8786", {"inline_max": "10"}),
        ("ray://local?cpus=2&cpus=3", "ray", "local", {"cpus": "3"}),
        ("ray://head:10001", "ray", "head:10001", {}),
    ],
)
def test_parse_cluster_url(url: str, scheme: str, address: str, options: dict[str, str]) -> None:
    target = parse_cluster_url(url)
    assert (target.url, target.scheme, target.address, target.options) == (
        url,
        scheme,
        address,
        options,
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "spark://x",
            "unknown executor 'spark://x': use threads, processes, subprocess, sandbox, "
            "container, dask://local",
        ),
        ("dask:/x", "unknown executor 'dask:/x'"),
        ("dask://?workers=2", "executor 'dask://?workers=2' names no host"),
        ("ray://head?inline_max=1MB", "inline_max must be a number of bytes"),
    ],
)
def test_parse_refuses_a_bad_url_saying_why(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_cluster_url(url)
    with pytest.raises(ValueError, match=re.escape(message)):
        executor_from_url(url)


def test_is_cluster_url_names_only_dask_and_ray() -> None:
    assert is_cluster_url("dask://local") and is_cluster_url("ray://h:1")
    assert not is_cluster_url("threads") and not is_cluster_url("spark://x")
    assert not is_cluster_url("dask")


def test_executor_from_url_builds_the_executor_of_the_parsed_url() -> None:
    try:
        dask = executor_from_url("dask://tls://sched:8786?workers=2")
        ray = executor_from_url("ray://local?cpus=2")
        assert isinstance(dask, ClusterExecutor) and isinstance(ray, ClusterExecutor)
        assert (dask.name, dask.address, dask.options) == (
            "dask",
            "tls://sched:8786",
            {"workers": "2"},
        )
        assert (ray.name, ray.address, ray.options) == ("ray", "local", {"cpus": "2"})
        assert executor_from_url("dask://tls://sched:8786?workers=2") is dask  # shared per URL
    finally:
        close_all()  # nothing connected: nothing to stop

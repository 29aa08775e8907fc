from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.devtools.samples import copy_with_new_uids
from tests.integration.node_fixture import RunningNode, make_node
from tests.requirements import require_node_components, sample_series


@pytest.fixture(scope="session")
def node_components() -> None:
    require_node_components()


@pytest.fixture(scope="session")
def ct_sample() -> Path:
    return sample_series("ct")


@pytest.fixture(scope="session")
def mr_sample() -> Path:
    return sample_series("mr")


@pytest.fixture
def new_study(tmp_path: Path):
    """A copy of a sample with new Study/Series/SOP UIDs: a study the node has never seen."""
    counter = iter(range(1000))

    def make(sample: Path) -> Path:
        return copy_with_new_uids(sample, tmp_path / f"study-{next(counter)}")

    return make


@pytest.fixture(scope="module")
def shared_node(node_components: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    node = make_node(tmp_path_factory.mktemp("node"))
    node.start()
    yield node
    node.stop()


@pytest.fixture
def node_in(node_components: None, tmp_path: Path):
    """Factory for a node of the test's own, stopped at the end of the test."""
    nodes: list[RunningNode] = []

    def make(**options: Any) -> RunningNode:
        node = make_node(tmp_path / f"node-{len(nodes)}", **options)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()

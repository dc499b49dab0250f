"""The placer prefers hosts whose model cache holds the endpoint's model (after FlashBoot holders,
before image holders), and the preference never keeps a worker from being placed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coordinator.scheduling import ClusterSnapshot, NodeSnapshot, PlacementRequest, plan_placement
from tide.api.endpoints import EndpointSpec
from tide.api.nodes import GpuInfo, NodeInventory

MODEL = "hf://acme/tiny@v1"


def _node(name: str, gpus: int, used: int, *, model: bool = False, **kw: list[str]) -> NodeSnapshot:
    cards = [GpuInfo(index=i, uuid=f"GPU-{name}-{i}", type_id="H100-80GB") for i in range(gpus)]
    inventory = NodeInventory(hostname=name, gpus=cards, images=kw.pop("images", []))
    held = ["ep"] if model else []  # the scheduler maps the inventory's model ids to endpoints
    return NodeSnapshot(
        node_id=name, inventory=inventory, in_use=[c.uuid for c in cards[:used]], model_endpoints=held, **kw
    )


def _request(n: int = 1, model: str = MODEL) -> PlacementRequest:
    spec = EndpointSpec(name="ep", image="img", gpu_type_ids=["H100-80GB"], model=model)
    return PlacementRequest(endpoint_id="ep", spec=spec, worker_ids=[f"w{i}" for i in range(n)])


hosts = st.lists(st.tuples(st.integers(1, 4), st.integers(0, 4), st.booleans()), min_size=1, max_size=6).map(
    lambda specs: [_node(f"h{i}", g, min(u, g), model=m) for i, (g, u, m) in enumerate(specs)]
)


@given(hosts)
def test_a_holder_with_room_is_chosen_and_the_preference_never_blocks(nodes: list[NodeSnapshot]) -> None:
    plan = plan_placement(ClusterSnapshot(nodes=nodes), [_request()])
    free = {n.node_id for n in nodes if len(n.in_use) < len(n.inventory.gpus)}
    holders = {n.node_id for n in nodes if n.model_endpoints} & free
    if not free:
        assert not plan.assignments
        return
    (got,) = plan.assignments
    assert got.node_id in (holders or free)


def test_flashboot_then_model_then_image_holders() -> None:
    nodes = [
        _node("image", 8, 0, images=["img"]),
        _node("model", 8, 0, model=True),
        _node("snap", 8, 0, flashboot_endpoints=["ep"]),
    ]
    assert plan_placement(ClusterSnapshot(nodes=nodes), [_request()]).assignments[0].node_id == "snap"
    assert plan_placement(ClusterSnapshot(nodes=nodes[:2]), [_request()]).assignments[0].node_id == "model"
    nodes[1] = _node("model", 8, 0)  # it evicted the model
    assert plan_placement(ClusterSnapshot(nodes=nodes[:2]), [_request()]).assignments[0].node_id == "image"


def test_the_scheduler_maps_model_ids_to_the_endpoints_naming_them() -> None:
    from coordinator.control._scheduler import endpoints_by_model
    from tiered_storage import parse_model_ref

    got = endpoints_by_model({"a": MODEL, "b": MODEL, "c": "", "d": "ftp://old"})
    assert got == {parse_model_ref(MODEL).id: ["a", "b"]}

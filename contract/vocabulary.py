"""The words both sides of the wire share, each defined once.

- gRPC: the services' full names (from the generated descriptors of proto/tellm/v1) and the message
  size limit that clients and servers set on their channels.
- The TE head's ONNX interface: input names and types in the order the graph declares them, output
  names, and the layout of the ``policy`` input (the policy vector).

Policy names and parameter bounds live in ``tellm.contract.policies``; this module has no logic.
"""

from __future__ import annotations

from .v1 import policy_pb2, traffic_engineering_service_pb2

# --------------------------------------------------------------------------- gRPC
#: Kdl at k=4 registers 2.27M paths and ~54M path-link entries (~110 MB on the wire); leave headroom.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

#: ``tellm.v1.TrafficEngineeringService``: register topologies, route traffic matrices, model admin.
TE_SERVICE_NAME = traffic_engineering_service_pb2.DESCRIPTOR.services_by_name["TrafficEngineeringService"].full_name
#: ``tellm.v1.PolicyService``: the active TE policy per topology.
POLICY_SERVICE_NAME = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name

#: Default listen/connect address of ``tellm serve`` (TrafficEngineeringService and PolicyService).
DEFAULT_INFERENCE_ADDRESS = "127.0.0.1:50051"

# --------------------------------------------------------------------------- ONNX interface
#: Input names and ONNX types of the TE head, in the order the graph declares them.
INPUT_TYPES: dict[str, str] = {
    "demand_bps": "tensor(float)",
    "capacity_bps": "tensor(float)",
    "latency_seconds": "tensor(float)",
    "link_up": "tensor(float)",
    "path_pair": "tensor(int64)",
    "inc_path": "tensor(int64)",
    "inc_link": "tensor(int64)",
    "policy": "tensor(float)",
}
INPUT_NAMES: tuple[str, ...] = tuple(INPUT_TYPES)
#: Output names of the TE head: split [Np], link_load_bps [L], mlu [] (or [1]).
OUTPUT_NAMES: tuple[str, ...] = ("split", "link_load_bps", "mlu")

# --------------------------------------------------------------------------- policy vector
#: Length of the ``policy`` input: [latency weight, burst headroom fraction, reserved, reserved].
POLICY_DIM = 4
#: ``policy[LATENCY_SLOT]``: latency penalty weight lambda (``latency_aware``).
LATENCY_SLOT = 0
#: ``policy[HEADROOM_SLOT]``: burst headroom fraction h (``headroom``).
HEADROOM_SLOT = 1

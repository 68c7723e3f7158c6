"""tellm's wire contract: everything a client of the model needs, built from proto/tellm/v1.

Import arrows run one way: ``tecore`` <- ``tellm.contract`` <- controller, policy, Mininet scenarios,
benchmarks; the inference service implements the contract and never imports the policy package.

- ``v1``: the gRPC stubs generated from proto/tellm/v1/*.proto at build time (git-ignored).
- ``vocabulary``: the shared words, each defined once: message size limit, service names, the TE
  head's ONNX input/output names and types, the policy vector layout (``POLICY_DIM``, slots).
- ``policies``: the policy catalogue (``min_mlu``, ``headroom``, ``latency_aware``), parameter bounds,
  policy vectors, the canonical spelling of names; ``AppliedPolicy``.
- ``onnx_io``: the TE head's input arrays from a tecore Topology and PathSet (``onnx_inputs``).
- ``codec``: numpy arrays <-> packed fields, tecore objects -> RegisterTopologyRequest, policies <->
  PolicyService messages.
- ``client``: ``InferenceClient`` (TrafficEngineeringService; retries through gRPC's retry policy).
- ``policy_client``: ``PolicyClient`` (PolicyService).
- ``security``: how both ends secure a hop: TLS credentials, the token roles of each method (``route``,
  ``admin``), the client and server settings, and the audit trail of admin calls.
"""

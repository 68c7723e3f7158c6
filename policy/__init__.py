"""tellm policies: choose the TE objective the learned model optimises, without retraining.

The policies themselves (named objectives with bounded parameters and their policy vectors, the
TE head's ``policy`` input: [latency weight, burst headroom fraction, 0, 0]) are part of the
contract, ``tellm.contract.policies``, and so is the PolicyService client
(``tellm.contract.policy_client``). ``tecore.objectives`` solves each policy exactly (per-policy
LP), and the TE head was trained on all of them (policies sampled per training instance), so
switching policy is one vector on the next Route, no retraining.

- ``service``: PolicyService (gRPC, proto/tellm/v1/policy.proto) and the thread-safe store whose
  ``active_policy_vector(topology_id)`` ``tellm serve`` uses for Route requests without a policy.
- ``state``: network state from the controller's ``GET /state`` or Prometheus.
- ``guard``: the only path to SetPolicy: bounds, rate limit, JSONL audit, automatic rollback,
  dry run, metrics (tellm_policy_info, tellm_policy_changes_total, tellm_policy_rollbacks_total).
- ``tools``: the six tools (get_network_state, get_mlu_history, list_policies, evaluate_policy,
  apply_policy, rollback) shared by the engines and the MCP server.
- ``rules`` / ``llm``: decision engines (rule-based default; any OpenAI-compatible endpoint).
- ``daemon`` / ``mcp_server``: ``tellm policy run`` and ``tellm policy mcp``.
"""

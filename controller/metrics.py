"""Every Prometheus metric of the controller, in one place (names are a contract with dashboards).

Each Metrics object has its own registry so that several controllers (tests) can live in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LOOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.mlu = Gauge("tellm_mlu_ratio", "Measured maximum link utilisation (port counters)", registry=r)
        self.link_utilization = Gauge("tellm_link_utilization_ratio", "Measured link utilisation", ["link"],
                                      registry=r)
        self.link_throughput = Gauge("tellm_link_throughput_bits_per_second", "Measured link throughput",
                                     ["link"], registry=r)
        self.tm_total = Gauge("tellm_traffic_matrix_total_bits_per_second",
                              "Sum of the estimated traffic matrix (ingress classification counters)", registry=r)
        self.loop_duration = Histogram("tellm_control_loop_duration_seconds",
                                       "One control loop iteration: estimate, route, plan", buckets=_LOOP_BUCKETS,
                                       registry=r)
        self.inference_duration = Histogram("tellm_inference_request_duration_seconds",
                                            "Inference request duration seen by the controller (client side)",
                                            buckets=_LOOP_BUCKETS, registry=r)
        self.fallbacks = Counter("tellm_fallback_total", "Routing fallbacks, by reason", ["reason"], registry=r)
        self.group_updates = Counter("tellm_group_updates_total", "Select groups (re)installed", registry=r)
        self.routing_info = Gauge("tellm_routing_info", "1 for the router whose routing is installed", ["router"],
                                  registry=r)
        self.shortest_path_mlu = Gauge("tellm_shortest_path_mlu_ratio",
                                       "MLU shortest-path routing would have on the measured traffic matrix",
                                       registry=r)
        self.stranded_pairs = Gauge("tellm_stranded_pairs",
                                    "Pairs none of whose candidate paths is up (before repair)", registry=r)
        self.repaired_pairs = Gauge("tellm_repaired_pairs",
                                    "Stranded pairs routed over a repair path (shortest surviving path)", registry=r)
        self.openflow_messages = Counter("tellm_openflow_messages_total",
                                         "OpenFlow messages of update plans sent to switches", registry=r)
        self.openflow_bytes = Counter("tellm_openflow_bytes_total",
                                      "Bytes of OpenFlow update-plan messages sent to switches", registry=r)
        self.switch_rules_max = Gauge("tellm_switch_rules_max",
                                      "Flow rules plus groups installed on the switch that holds the most",
                                      registry=r)
        self.switch_rules_bound = Gauge("tellm_switch_rules_bound",
                                        "Most flow rules plus groups any routing of the candidate paths needs on "
                                        "one switch", registry=r)
        self.routing_age = Gauge("tellm_routing_age_seconds",
                                 "Age of the installed routing's input (TM snapshot) at the end of the interval",
                                 registry=r)
        self.router_busy_intervals = Counter("tellm_router_busy_intervals",
                                             "Intervals that installed no new routing because the router was still "
                                             "computing an earlier one", registry=r)
        self.routings_discarded = Counter("tellm_routings_discarded",
                                          "Routings dropped on arrival: the path set or link state had changed",
                                          registry=r)
        self.deadband_pairs = Gauge("tellm_deadband_pairs",
                                    "Pairs whose installed split the last plan kept (within --weight-deadband)",
                                    registry=r)
        self.interval_overruns = Counter("tellm_control_interval_overruns",
                                         "Control intervals whose work took longer than the poll interval", registry=r)
        self._router: str | None = None
        self._link_names: list[str] = []
        self._link_series: list = []

    def set_links(self, names: list[str], utilization, throughput_bps) -> None:
        if self._link_names != names:  # look the labelled series up once per topology, not per interval
            self._link_series = [(self.link_utilization.labels(link=n), self.link_throughput.labels(link=n))
                                 for n in names]
            self._link_names = list(names)
        for (u_series, t_series), u, t in zip(self._link_series, utilization.tolist(), throughput_bps.tolist()):
            u_series.set(u)
            t_series.set(t)

    def forget_links(self) -> None:
        """Drop every per-link series (the topology was replaced; its link names may be gone)."""
        self.link_utilization.clear()
        self.link_throughput.clear()
        self._link_names, self._link_series = [], []

    def set_router(self, name: str) -> None:
        if name == self._router:
            return
        if self._router is not None:
            self.routing_info.labels(router=self._router).set(0)
        self.routing_info.labels(router=name).set(1)
        self._router = name

    def serve(self, port: int, addr: str = "127.0.0.1"):
        """Serve /metrics; returns (server, thread)."""
        return start_http_server(port, addr=addr, registry=self.registry)

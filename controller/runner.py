"""Run the controller in-process: os-ken's AppManager with our app, metrics and the JSON API, until
SIGINT/SIGTERM (clean exit, no traceback)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass

from .core import ControllerCore

log = logging.getLogger("tellm.controller")


@dataclass(frozen=True)
class ServeOptions:
    of_port: int = 6653
    of_host: str = "127.0.0.1"
    metrics_port: int | None = 9101
    api_port: int | None = 9100
    http_host: str = "127.0.0.1"
    # OpenFlow over TLS: with a certificate and key, --of-port speaks TLS only; with a CA, switches must
    # present a certificate it signed (mutual TLS).
    ofp_ssl_cert: str | None = None
    ofp_ssl_key: str | None = None
    ofp_ssl_ca: str | None = None


def check_ofp_tls(opts: ServeOptions) -> None:
    """Load the OpenFlow TLS files once here so that a bad file is an operator error at start (os-ken
    would only fail inside its listener thread)."""
    import ssl

    if not opts.ofp_ssl_cert and not opts.ofp_ssl_key and not opts.ofp_ssl_ca:
        return
    if not (opts.ofp_ssl_cert and opts.ofp_ssl_key):
        raise ValueError("OpenFlow TLS needs both --ofp-ssl-cert and --ofp-ssl-key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(opts.ofp_ssl_cert, opts.ofp_ssl_key)
        if opts.ofp_ssl_ca:
            ctx.load_verify_locations(opts.ofp_ssl_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"OpenFlow TLS files: {exc}") from None


def _osken_args(opts: ServeOptions) -> list[str]:
    args = ["--ofp-listen-host", opts.of_host]
    if opts.ofp_ssl_cert and opts.ofp_ssl_key:
        args += ["--ofp-ssl-listen-port", str(opts.of_port), "--ctl-cert", opts.ofp_ssl_cert,
                 "--ctl-privkey", opts.ofp_ssl_key]
        if opts.ofp_ssl_ca:
            args += ["--ca-certs", opts.ofp_ssl_ca]
    else:
        args += ["--ofp-tcp-listen-port", str(opts.of_port)]
    return args


def check_port_free(host: str, port: int) -> None:
    """Raise OSError when something already listens on (host, port): os-ken's listener thread would
    only log the failure and the controller would run without switches."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
        try:
            s.bind((host, port))
        except OSError as exc:
            raise OSError(f"{host}:{port} is in use ({exc.strerror})") from None


def run(core: ControllerCore, opts: ServeOptions, stop: threading.Event | None = None) -> int:
    """Block until ``stop`` is set or a signal arrives; returns the exit code."""
    check_port_free(opts.of_host, opts.of_port)
    os.environ.setdefault("OSKEN_HUB_TYPE", "native")  # before os-ken's hub is imported
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    from . import app as app_module
    from .api import serve_state

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stop.set())
    cfg.CONF(args=_osken_args(opts), project="os_ken")
    metrics_server = api_server = None
    if opts.metrics_port:
        metrics_server, _ = core.metrics.serve(opts.metrics_port, opts.http_host)
    core.snapshot = core.make_snapshot()
    if opts.api_port:
        api_server = serve_state(core.state_json, opts.api_port, opts.http_host, groups_optional=True)
    app_module.RUNTIME.update(core=core)
    mgr = AppManager.get_instance()
    mgr.load_apps(["tellm.controller.app"])
    contexts = mgr.create_contexts()
    mgr.instantiate_apps(**contexts)
    ours = [a for a in mgr.applications.values() if isinstance(a, app_module.TellmController)]
    tls = "TLS, switch certificates required" if opts.ofp_ssl_ca else "TLS" if opts.ofp_ssl_cert else "plain TCP"
    log.warning("controller listening for OpenFlow 1.5 on %s:%d (%s); metrics :%s, API :%s (router %s)",
                opts.of_host, opts.of_port, tls, opts.metrics_port, opts.api_port, core.router.name)
    try:
        stop.wait()
    finally:
        log.warning("controller stopping")
        # Only our app is stopped: os-ken's AppManager.close() joins the OpenFlow listener thread,
        # which on native threads never returns. The CLI exits the process right after this.
        for a in ours:
            a.stop()
        for server in (metrics_server, api_server):
            if server is not None:
                server.shutdown()
    return 0

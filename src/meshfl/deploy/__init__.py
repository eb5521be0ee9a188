"""meshfl on Flower's deployment runtime: a SuperLink (the coordinator) and SuperNodes (MSPs).

Nothing here reimplements Flower's runtime. :mod:`meshfl.deploy.apps` exposes the
``server_app`` and ``client_app`` objects that Flower's ``flwr-serverapp`` and
``flwr-clientapp`` processes load; :func:`~meshfl.deploy.project.write_app_project` writes
the small Flower app project (a ``pyproject.toml`` with ``[tool.flwr.app]``) that
``flwr run`` bundles and submits; :mod:`meshfl.deploy.certs` makes the TLS certificates and
SuperNode authentication keys Flower's own flags take (the commands are in its docstring).
tests/integration/test_deploy_loopback.py runs the whole recipe on loopback.
"""

from meshfl.deploy.project import (
    APP_NAME,
    CLIENT_APP_REF,
    SERVER_APP_REF,
    write_app_project,
    write_flower_config,
)

__all__ = [
    "APP_NAME",
    "CLIENT_APP_REF",
    "SERVER_APP_REF",
    "write_app_project",
    "write_flower_config",
]

"""Federation on Flower's Message API: ClientApp, ServerApp, strategy and engines.

It holds meshfl's use of Flower's Message API; the deployment and service layers above it
import ``flwr`` too, for Flower's runtime (SuperLink, SuperNodes).
"""

from meshfl.federation.client_app import DataProvider, NodeData, make_client_app
from meshfl.federation.engine import InProcessGrid, run_in_process
from meshfl.federation.server_app import AgentPlan, AgentRun, make_server_app, run_plan
from meshfl.federation.strategy import AgentStrategy

__all__ = [
    "AgentPlan",
    "AgentRun",
    "AgentStrategy",
    "DataProvider",
    "InProcessGrid",
    "NodeData",
    "make_client_app",
    "make_server_app",
    "run_in_process",
    "run_plan",
]

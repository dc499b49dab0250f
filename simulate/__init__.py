"""``tide simulate``: replay a request trace through the real scheduling planners on a virtual
clock, and measure GPU-hours, queue delay, cold starts and MIG re-cuts per policy.

Imports only ``coordinator.scheduling``'s public names (the pure planners and the records they
read), ``mig`` and ``tide.api``; nothing here reads a wall clock except to report its own run
time.  docs/simulate.md documents the inputs and outputs.
"""

from simulate._cli import main
from simulate._errors import InputError
from simulate._inputs import EndpointsFile, Fleet, Trace, load_endpoints, load_fleet, load_trace
from simulate._layouts import named_layouts
from simulate._policy import Policy, parse_policy
from simulate._run import HourStats, SimResult, SimSettings, best_static, simulate
from simulate._stages import StageModel

__all__ = [
    "EndpointsFile",
    "Fleet",
    "HourStats",
    "InputError",
    "Policy",
    "SimResult",
    "SimSettings",
    "StageModel",
    "Trace",
    "best_static",
    "load_endpoints",
    "load_fleet",
    "load_trace",
    "main",
    "named_layouts",
    "parse_policy",
    "simulate",
]

"""The messages between the controller and a target, one typed definition each.

Both ends import this module: the controller (engine/, core/) to build requests and read
answers, the target code (probe, applier, wrapper; bundled with this module, see
deployer/core/bundle.py) to read requests and build answers. Standard library only.

Every message travels as JSON, so each is a TypedDict: the data on the wire is plain dicts
and lists, and mypy checks both ends against the same definition. An answer comes from a
target, where a less-privileged user may have written what the probe reads: the controller
still checks values it acts on (core/facts.py), the types say what a well-formed one holds.

Families:
- the probe: ProbeRequest (controller -> target), ProbeAnswer (target -> controller);
- the applier: ApplyRequest, the bundle of one change (controller -> target), and ApplyAnswer;
- the run wrapper: RunRecord, one line of a job's ledger (wrapper -> ledger -> probe -> controller).
"""

from __future__ import annotations

from typing import Literal, TypedDict

# ---------------------------------------------------------------------------------------------
# The probe: ProbeRequest and ProbeAnswer (deployer/remote/probe.py, deployer/engine/session.py,
# deployer/core/facts.py).

# (probe messages: to be defined)


# ---------------------------------------------------------------------------------------------
# The applier: ApplyRequest and ApplyAnswer (deployer/remote/applier.py, deployer/core/plan.py,
# deployer/core/lifecycle.py, deployer/engine/session.py).

# (applier messages: to be defined)


# ---------------------------------------------------------------------------------------------
# The run wrapper's ledger line: RunRecord (deployer/remote/wrapper.py writes it,
# deployer/remote/targetlib.py run_record reads it back, the controller shows it).

# (ledger messages: to be defined)

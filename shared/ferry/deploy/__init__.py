"""``ferry deploy``: turn ``infra/`` into a running Ferry on Google Cloud.

``plan()`` lists the ordered steps with their exact requests (what ``--dry-run`` prints);
``deploy()`` applies them idempotently through an :class:`Applier` built on injected clients.
"""

from ferry.deploy.apply import Applier, Outcome, RunResult, deploy
from ferry.deploy.planning import Step, plan

__all__ = ["Applier", "Outcome", "RunResult", "Step", "deploy", "plan"]

"""``ptqx.experiment``: the audit pipeline (layer 5).

Work units with content-derived keys, an artifact store, executors, and the report::

    from ptqx.experiment import AuditConfig, audit
    results = audit(AuditConfig(dataset="digits", methods=("rtn", "obc"), bits=(4, 2)))
"""

from .audit import AuditError, AuditResults, audit, load_results, plan_audit
from .config import AuditConfig, ConfigError, derive_seed
from .executors import EXECUTORS, InProcessExecutor, ProcessPoolExecutor, make_executor
from .report import write_report
from .store import ArtifactCorrupt, ArtifactMissing, FileStore
from .units import UNIT_KINDS, Unit, content_key, make_unit, run_unit

__all__ = [
    "EXECUTORS",
    "UNIT_KINDS",
    "ArtifactCorrupt",
    "ArtifactMissing",
    "AuditConfig",
    "AuditError",
    "AuditResults",
    "ConfigError",
    "FileStore",
    "InProcessExecutor",
    "ProcessPoolExecutor",
    "Unit",
    "audit",
    "content_key",
    "derive_seed",
    "load_results",
    "make_executor",
    "make_unit",
    "plan_audit",
    "run_unit",
    "write_report",
]

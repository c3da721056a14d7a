"""exportsweep's export pipeline and failure taxonomy.

Everything here runs in one process and never imports Ray: ``run_entry`` takes a
manifest entry and returns plain records, which the orchestrator ships around.
"""

__version__ = "0.1.0"

"""Running a sweep on Ray: the cluster connection, the supervisor, the worker actor, Ray Jobs.

The only package of exportsweep that imports Ray.
"""

import os

# Read when Ray is first imported, which happens in this package's modules: keep every line a
# worker prints in the logs instead of Ray's "repeated Nx" summaries.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

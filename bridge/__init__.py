"""ddb-bridge: replicate DynamoDB tables across regions, accounts and partitions.

Data path, one direction: :mod:`bridge.source` -> :mod:`bridge.envelope` ->
:mod:`bridge.transport` -> :mod:`bridge.apply`.
"""

from bridge.plugin.spec import hookimpl

__all__ = ["__version__", "hookimpl"]
__version__ = "0.1.0"

"""Console entry points: ``bridge-publish``, ``bridge-apply`` and the ``bridge`` admin command."""

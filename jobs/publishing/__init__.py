"""Publishing: a run's lists into Redis as a new version (`loader`), the versions kept and rolled back
(`retention`), and the move of an older key layout (`migrate`). Keys, formats and scripts:
`carousel.cache`."""

from __future__ import annotations


class PublishError(RuntimeError):
    """The version could not be published; the live version is unchanged."""

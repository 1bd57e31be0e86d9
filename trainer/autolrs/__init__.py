"""AutoLRS: Bayesian-optimised learning-rate schedules found during training."""

from autolrs.config import AutoLRSConfig

__version__ = "0.1.0"
__all__ = ["AutoLRS", "AutoLRSConfig", "__version__"]


def __getattr__(name: str):
    # The torch wrapper is imported lazily so the pure engine imports without torch.
    if name == "AutoLRS":
        from autolrs.scheduler import AutoLRS

        return AutoLRS
    raise AttributeError(name)

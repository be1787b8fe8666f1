"""convexp: compare convolution designs on MNIST with Hydra configs, one runner and W&B."""

from convexp.models import build_model, list_models, register_model

__version__ = "0.1.0"
__all__ = ["build_model", "list_models", "register_model", "__version__"]

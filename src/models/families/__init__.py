"""The families of registered models, one module each; what a family is: :class:`ModelFamily`."""
from .base import ModelFamily

__all__ = ["ModelFamily"]

"""provision: install whole Linux PC clusters from one YAML inventory."""

__version__ = "0.1.0"

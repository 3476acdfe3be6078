"""aml-netcheck: on-node connectivity diagnosis for Azure Machine Learning compute in a VNet."""

__version__ = "0.1.0"

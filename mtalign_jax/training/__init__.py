"""Training machinery: optimizer (optim.py), pure step functions (steps.py), the sharded loop."""

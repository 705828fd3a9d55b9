"""Device mesh from config (mesh.py) and logical-to-mesh sharding rules (rules.py)."""

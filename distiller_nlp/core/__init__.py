"""The shared core: losses, FLOPs, feature capture and the one Accelerate engine. Depends on torch (+ accelerate)."""

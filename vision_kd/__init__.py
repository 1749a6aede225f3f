"""vision_kd: image-classification KD methods on the shared loss core (work in progress)."""

"""Stage 4, model organisms: fine-tuning backends and datasets (`training`), experiments from a YAML
config (`experiment`), and what a vector predicts about fine-tuning (`shift`: shift and data screening)."""

"""Training: one config trained for real and measured honestly (config, tricks, models, data,
timing, engine)."""

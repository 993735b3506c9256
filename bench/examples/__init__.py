"""The pretrained examples: all-MiniLM-L6-v2's data and model, the recommended pipeline timed, and the user's
alternative (truncation, fine-tuning, int8) beside its export."""

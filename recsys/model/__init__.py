"""The TFRS two-tower model: towers, the model class, warm start and export (imports TensorFlow)."""

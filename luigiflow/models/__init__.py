"""Model bundles: processing chain + model as one MLflow pyfunc model, and serving it."""

"""The pyfunc model luigiflow logs for a processing chain followed by a model.

Logged as MLflow "models from code": this file is copied into the model folder, so
loading the model needs only MLflow and the stages' own libraries (scikit-learn...),
neither luigiflow nor the pipeline module that trained it. Keep it self-contained.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


def _bad_input(message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class PipelineModel(PythonModel):
    """predict(raw rows) = stages[-1].<method>(stages[-2].transform(...(raw)))."""

    def load_context(self, context: Any) -> None:
        import joblib

        config = context.model_config
        self.columns = list(config["columns"])
        self.method = config["predict_method"]
        self.names = list(config["stage_names"])
        self.stages = [joblib.load(context.artifacts[f"stage_{i}"]) for i in range(len(self.names))]

    # No type hints here: MLflow reads predict()'s hints as an input schema.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if frame.empty:
            raise _bad_input("the input has no rows; send at least one row of raw columns")
        missing = [c for c in self.columns if c not in frame.columns]
        extra = [c for c in frame.columns if c not in self.columns]
        if missing or extra:
            raise _bad_input(_columns_message(missing, extra))
        data: Any = frame[self.columns]
        for name, stage in zip(self.names[:-1], self.stages[:-1], strict=True):
            try:
                data = stage.transform(data)
            except Exception as exc:
                raise _bad_input(f"processing stage {name} rejected the input: {exc}") from None
        try:
            return getattr(self.stages[-1], self.method)(data)
        except Exception as exc:
            raise _bad_input(f"model {self.names[-1]} rejected the input: {exc}") from None


def _columns_message(missing: list[str], extra: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing column(s): {', '.join(missing)}")
    if extra:
        parts.append(f"unexpected column(s): {', '.join(map(str, extra))}")
    return "; ".join(parts) + " (send exactly the raw columns the model was trained on)"


mlflow.models.set_model(PipelineModel())

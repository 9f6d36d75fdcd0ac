"""MLflow "model from code": loads a transfer-bench bundle and classifies texts.

    model = mlflow.pyfunc.load_model("runs:/<run_id>/model")
    model.predict(pd.DataFrame({"text": ["a wonderful film", "dull and far too long"]}))
"""

import mlflow
import pandas as pd


class TransferBenchModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from experiments.bundle import display_order, load_bundle

        self.strategy, self.label_names = load_bundle(context.artifacts["bundle"])
        self.order = display_order(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None):  # a "text" column (or the first)
        from experiments.bundle import predict_frame

        if isinstance(model_input, pd.DataFrame):
            texts = model_input["text" if "text" in model_input else model_input.columns[0]]
        else:
            texts = pd.Series(model_input)
        return predict_frame(self.strategy, self.label_names, texts.astype(str).tolist(), self.order)


mlflow.models.set_model(TransferBenchModel())

"""MLflow "models from code" entry: MLflow runs this file to get the model, so nothing of
mfexp's model is pickled into (or unpickled from) the artifact."""
from mlflow.models import set_model

from mfexp.pyfunc import MFModel

set_model(MFModel())

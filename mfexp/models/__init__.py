"""Models as plugins: each module holds one network, its typed settings and its towers; see
`base.Recommender` for the interface and `plugins` for how `model._target_` is resolved."""
from mfexp.models.base import ModelData, ModelSettings, Recommender, Towers
from mfexp.models.plugins import (build_for_data, build_model, model_class, to_settings, typed_node,
                                  validate)

__all__ = ["ModelData", "ModelSettings", "Recommender", "Towers", "build_for_data", "build_model", "model_class", "to_settings",
           "typed_node", "validate"]

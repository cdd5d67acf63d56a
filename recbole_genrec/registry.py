"""Model and trainer lookup: this plugin's models first, RecBole's own models second."""
import difflib
import importlib

from recbole.utils import get_trainer as recbole_get_trainer

# Plugin model name -> module under recbole_genrec.model. A new method adds one line here.
GENREC_MODELS = {
    "TIGER": "recbole_genrec.model.tiger",
    "RPG": "recbole_genrec.model.rpg",
    "LETTER": "recbole_genrec.model.letter",
    "LIGER": "recbole_genrec.model.liger",
    "EAGER": "recbole_genrec.model.eager",
    "MQL4GRec": "recbole_genrec.model.mql4grec",
    "ColaRec": "recbole_genrec.model.colarec",
}

# RecBole packages searched on a miss. RecBole's own lookup also walks `exlib_recommender`, which imports
# optional libraries (lightgbm, xgboost) and fails with an unrelated ImportError; we skip it.
_RECBOLE_MODEL_PACKAGES = (
    "recbole.model.general_recommender",
    "recbole.model.context_aware_recommender",
    "recbole.model.sequential_recommender",
    "recbole.model.knowledge_aware_recommender",
)


def recbole_model_names():
    names = []
    for package_name in _RECBOLE_MODEL_PACKAGES:
        package = importlib.import_module(package_name)
        names += [
            name
            for name in dir(package)
            if isinstance(getattr(package, name), type) and not name.startswith("_")
        ]
    return sorted(set(names))


def closest_names(key, known, n=3):
    """The known names closest to `key` (difflib, case-insensitive)."""
    by_lower = {}
    for name in sorted(known):
        by_lower.setdefault(name.lower(), name)
    return [by_lower[m] for m in difflib.get_close_matches(key.lower(), list(by_lower), n=n, cutoff=0.7)]


def available_models():
    return list(GENREC_MODELS) + recbole_model_names()


def is_genrec_model(model_name):
    return model_name in GENREC_MODELS


def get_model(model_name):
    """Return the model class for `model_name`; raise a ValueError listing the available models on a miss."""
    if model_name in GENREC_MODELS:
        return getattr(importlib.import_module(GENREC_MODELS[model_name]), model_name)
    for package_name in _RECBOLE_MODEL_PACKAGES:
        module_name = f"{package_name}.{model_name.lower()}"
        if importlib.util.find_spec(module_name) is not None:
            module = importlib.import_module(module_name)
            if hasattr(module, model_name):
                return getattr(module, model_name)
    close = closest_names(model_name, available_models())
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise ValueError(
        f"Unknown model '{model_name}'{hint}. Generative models: {', '.join(GENREC_MODELS)}. "
        f"RecBole models: {', '.join(recbole_model_names())}. Names are case-sensitive."
    )


def get_trainer(model_type, model_name):
    """Every model gets the plugin trainer (one evaluator for all), except RecBole models whose training needs
    a dedicated RecBole trainer (knowledge-graph, traditional, pre-training models)."""
    from recbole_genrec.trainer import GenRecTrainer

    if model_name in GENREC_MODELS:
        module = importlib.import_module(GENREC_MODELS[model_name])
        return getattr(module, f"{model_name}Trainer", GenRecTrainer)
    recbole_trainer = recbole_get_trainer(model_type, model_name)
    if recbole_trainer.__name__ == "Trainer":
        return GenRecTrainer
    return recbole_trainer

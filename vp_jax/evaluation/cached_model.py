"""Load a scorer model trained here from its cache file, or train and cache it.

The digit classifier and the demo feature network are small models trained once from real
demo material; both are cached to a file and reused while their training settings match.
"""
from __future__ import annotations

import dataclasses


def load_or_train(cls, path: str, settings, name: str, describe):
    """`cls.load(path)` if it was trained with `settings`, else `cls.train(settings).save(path)`.

    describe(model) -> str is printed after training (e.g. its validation accuracy).
    """
    try:
        model = cls.load(path)
        if model.info.get("settings") == dataclasses.asdict(settings):
            return model
        print(f"[{name}] {path} was trained with other settings; retraining")
    except FileNotFoundError:
        pass
    except ValueError as e:
        print(f"[{name}] {e}; retraining")
    print(f"[{name}] training on {settings.num_clips} real train-split demo clips")
    model = cls.train(settings)
    model.save(path)
    print(f"[{name}] {describe(model)}; saved {path}")
    return model

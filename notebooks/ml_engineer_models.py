# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Two registered models, side by side
#
# The ML engineer's notebook: the offline metrics of two versions of a registered model (by
# default the ranker's `champion` and `challenger` aliases), read from the MLflow runs that
# trained them, as a table of both values and the difference, and a plot of the relative
# change per metric. Set `MODEL`, `A` and `B` (or `NOTEBOOK_MODEL`, `NOTEBOOK_A`,
# `NOTEBOOK_B`); each is an alias or a version number.

# %%
import os

import matplotlib.pyplot as plt
import pandas as pd
from mlflow.tracking import MlflowClient

from core.config import get_settings
from training import registry

MODEL = os.environ.get("NOTEBOOK_MODEL", "ranker")
A = os.environ.get("NOTEBOOK_A", "champion")
B = os.environ.get("NOTEBOOK_B", "challenger")
settings = get_settings()
registry.connect(settings.mlflow_tracking_uri)
name = registry.MODELS.get(MODEL, MODEL)


# %%
def version_of(ref: str):  # noqa: ANN201 - an MLflow ModelVersion
    """An alias (``champion``) or a version number (``3``) of the model."""
    sep = "/" if ref.isdigit() else "@"
    return registry.resolve(f"models:/{name}{sep}{ref}")


client = MlflowClient()
versions = {ref: version_of(ref) for ref in (A, B)}
metrics = {f"{ref} (v{v.version})": client.get_run(v.run_id).data.metrics
           for ref, v in versions.items()}
table = pd.DataFrame(metrics)
table["diff"] = table.iloc[:, 1] - table.iloc[:, 0]
table["rel"] = table["diff"] / table.iloc[:, 0].abs()
table.sort_index()

# %% [markdown]
# ## Relative change, B against A

# %%
shown = table["rel"].dropna().sort_values()
fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(shown), 3) + 1))
ax.barh(shown.index, shown.to_numpy() * 100,
        color=["tab:green" if v > 0 else "tab:red" for v in shown])
ax.axvline(0, color="black", lw=0.8)
ax.set_xlabel(f"% change of {B} vs {A} (higher is not better for losses)")
plt.show()

# %% [markdown]
# ## What each version was trained with

# %%
pd.DataFrame({f"{ref} (v{v.version})": client.get_run(v.run_id).data.params
              for ref, v in versions.items()})

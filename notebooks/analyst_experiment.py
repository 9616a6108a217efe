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
# # An A/B experiment's results
#
# The analyst's notebook: load an experiment's results from the platform's database (the same
# analysis as `reelrank experiment analyze NAME`) and look at them from other angles than the
# report: the results table, lift per metric, the primary metric day by day, the distribution
# of the primary metric per arm, and assignment balance.
#
# Set `EXPERIMENT` (or the environment variable `NOTEBOOK_EXPERIMENT`). With
# `NOTEBOOK_DEMO=1` and no such experiment, a small one with synthetic logs is created first
# (what the tests run top to bottom).

# %%
import os
from datetime import timedelta

import matplotlib.pyplot as plt
import numpy as np

from core.config import get_settings
from experiments import metrics, report, store
from experiments.analysis import analyze, load
from platform_services.storage.db import make_engine, session_factory

EXPERIMENT = os.environ.get("NOTEBOOK_EXPERIMENT", "demo-explore")
DEMO = os.environ.get("NOTEBOOK_DEMO") == "1"
settings = get_settings()
sessions = session_factory(make_engine(settings.database_url))

# %%
if DEMO:
    from experiments.spec import parse_spec
    from experiments.synthetic_logs import SyntheticConfig, generate

    with sessions.begin() as s:
        if not any(e.name == EXPERIMENT for e in store.list_experiments(s)):
            store.create(s, parse_spec({
                "name": EXPERIMENT, "hypothesis": "more exploration slots lift watch time",
                "variants": [{"name": "control", "weight": 50},
                             {"name": "explore", "weight": 50, "explore_slots": 0.2}]}),
                lambda *_: None)
            exp = store.start(s, EXPERIMENT)
            exp.started_at -= timedelta(days=7)
            s.flush()
            generate(s, exp, SyntheticConfig(users=600, effect=0.15, seed=11))

# %%
with sessions() as s:
    result = analyze(s, EXPERIMENT, resamples=200)
    logs = load(s, store.get(s, EXPERIMENT))
print(report.text_table(result))

# %% [markdown]
# ## Results table

# %%
table = result.table()
table[["variant", "metric", "control", "treatment", "rel", "p", "p_adj", "p_seq", "cuped"]]

# %% [markdown]
# ## Lift per metric, with the t-test and bootstrap intervals

# %%
report.lift_figure(result)
plt.show()

# %% [markdown]
# ## The primary metric, day by day (always-valid confidence sequence)

# %%
if result.cumulative:
    report.cumulative_figure(result)
    plt.show()

# %% [markdown]
# ## Distribution of the primary metric per arm

# %%
users = metrics.first_exposures(logs.exposures)
users = users[users["n_variants"] == 1]
per_user = metrics.per_user(users, logs.interactions, logs.exposures, logs.end_ms)
per_user = per_user.join(users["variant"])
primary = result.experiment["primary_metric"]
fig, ax = plt.subplots(figsize=(7, 3.5))
for arm, values in per_user.groupby("variant")[primary]:
    ax.hist(values.dropna(), bins=40, alpha=0.5, density=True, label=f"{arm} (n={len(values)})")
ax.set_xlabel(primary)
ax.legend()
plt.show()
assert np.isfinite(per_user[primary]).all()

# %% [markdown]
# ## Assignment balance

# %%
report.balance_figure(result)
plt.show()
print(result.arms.to_string())

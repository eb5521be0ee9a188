"""Federate your own data: one DataFrame (or CSV path) per MSP, validated against the schema.

.venv/bin/python examples/own_data.py
"""

import meshfl
from meshfl.data import operational_metrics

# Stand-ins for three MSPs' exports; in practice pd.read_csv(...) or a path per MSP.
frames = [operational_metrics(500, seed=s) for s in range(3)]
result = meshfl.simulate(agent="anomaly", num_msps=3, rounds=4, seed=0, data=frames)
print(result.history[["round", "msps", "auc", "average_precision"]])

path = result.model.save("anomaly_model.npz")
model = meshfl.load(path)
scores = model.score_samples(frames[0])
print("most anomalous rows of MSP 0:\n", frames[0].assign(score=scores).nsmallest(5, "score"))

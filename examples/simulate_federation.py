"""Simulate a federation of 5 MSPs for each built agent and compare with local-only training.

.venv/bin/python examples/simulate_federation.py
"""

import meshfl
from meshfl.baselines import local_only

for agent in meshfl.agents.built():
    result = meshfl.simulate(agent=agent, num_msps=5, rounds=3, seed=0)
    print(result.history.drop(columns=["agent"]).round(4).to_string(index=False))

    metric = result.model.agent.metric
    local_models, _ = local_only(result.plan, result.partitions)  # the same plan, alone
    local = [m.evaluate(result.test_data)[metric] for m in local_models]
    print(
        f"{agent}: federated {metric} {result.evaluate()[metric]:.3f} vs "
        f"local-only mean {sum(local) / len(local):.3f} on all MSPs' held-out data\n"
    )

model = meshfl.simulate(agent="threat_intel", num_msps=5, rounds=3, seed=0, progress=False).model
print(
    model.predict_details(
        [
            "Nov 26 03:14:07 fw01 sshd[2231]: Failed password for invalid user admin "
            "from 185.220.101.4 port 51234 ssh2",
            "Nov 26 09:00:01 web02 CRON[1234]: (root) CMD (run-parts /etc/cron.hourly)",
        ]
    )
)

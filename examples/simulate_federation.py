"""Simulate a federation of 5 MSPs for each built agent and compare with local-only training.

.venv/bin/python examples/simulate_federation.py          # 400 rows per MSP, 3 rounds (minutes)
.venv/bin/python examples/simulate_federation.py --quick  # 60 rows per MSP, 2 rounds (CI)
"""

import argparse

import meshfl
from meshfl.baselines import local_only

parser = argparse.ArgumentParser(description="Every built agent, federated and local-only.")
parser.add_argument("--quick", action="store_true", help="60 rows per MSP and 2 rounds")
quick = parser.parse_args().quick
settings = dict(num_msps=5, seed=0, rounds=2 if quick else 3, samples_per_msp=60 if quick else 400)

for agent in meshfl.agents.built():
    result = meshfl.simulate(agent=agent, **settings)
    print(result.history.drop(columns=["agent"]).round(4).to_string(index=False))

    metric = result.model.agent.metric
    local_models, _ = local_only(result.plan, result.partitions)  # the same plan, alone
    local = [m.evaluate(result.test_data)[metric] for m in local_models]
    print(
        f"{agent}: federated {metric} {result.evaluate()[metric]:.3f} vs "
        f"local-only mean {sum(local) / len(local):.3f} on all MSPs' held-out data\n"
    )

model = meshfl.simulate(agent="threat_intel", progress=False, **settings).model
print(
    model.predict_details(
        [
            "Nov 26 03:14:07 fw01 sshd[2231]: Failed password for invalid user admin "
            "from 185.220.101.4 port 51234 ssh2",
            "Nov 26 09:00:01 web02 CRON[1234]: (root) CMD (run-parts /etc/cron.hourly)",
        ]
    )
)

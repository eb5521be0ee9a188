"""Model families the agents are built from; no knowledge of federation."""

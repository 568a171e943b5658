"""The model layer: world models, the latent action decoder, known dynamics. Imports ``dcem_agents.math`` and torch only."""

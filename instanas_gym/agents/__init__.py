"""Agents and what judges them: REINFORCE (the paper's), Stable-Baselines3 adapters, the full search
(phases 2 and 3), evaluation on the test split, reports and the agent comparison."""

"""The deployment manager: traffic tables, rollouts and their history, routes, and the step driver."""

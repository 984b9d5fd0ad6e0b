"""Simulated agents standing in for the game's test-agent script (`babylon simulate`): market.py, strategies.py,
episodes.py, writer.py."""

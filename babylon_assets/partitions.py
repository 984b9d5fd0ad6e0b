"""The window partitions: one dynamic partition per hourly window, added once the window is over and
eligible (trajectories/discovery.py decides which; the sensor and `babylon train` add them)."""

import dagster as dg

WINDOW_PARTITIONS = "windows"
window_partitions = dg.DynamicPartitionsDefinition(name=WINDOW_PARTITIONS)

import dagster as dg

window_partitions = dg.DynamicPartitionsDefinition(name="windows")

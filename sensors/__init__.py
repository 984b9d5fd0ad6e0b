"""The platform's sensors: fresh windows become partitions and runs; enough fresh scores start training."""

from sensors.fresh_windows import fresh_windows_sensor
from sensors.training import training_sensor

__all__ = ["fresh_windows_sensor", "training_sensor"]

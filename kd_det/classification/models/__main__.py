"""``python -m kd_det.classification.models`` prints the zoo's parameter counts."""
from . import parameter_table

print(parameter_table())

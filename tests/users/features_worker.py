"""Run by tests/users/test_features.py under `torch.distributed.run`: the features of a data file,
computed with the processes sharing the texts; each rank writes what it read back."""
import sys
from pathlib import Path

import numpy as np

from personalign.users.features import FeatureSpec
from personalign.users.population import load_population


def main() -> None:
    data, out = sys.argv[1], Path(sys.argv[2])
    pop = load_population(data, FeatureSpec(batch_size=8), progress=False)
    from personalign.models.loading import process_state

    state = process_state()
    np.save(out / f"rank-{state.process_index}.npy", np.asarray(pop.features))
    state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main()

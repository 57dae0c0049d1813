"""3-layer GPT-2 transformer, 2 head(s), width 64 trained with `iclbench train`; the command and training log are in log.json."""

from iclbench.models.plugin import TrainedModel


class Trained(TrainedModel):
    name = 'gpt2-tiny-noisy-d5'

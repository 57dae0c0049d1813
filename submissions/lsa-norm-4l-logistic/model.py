"""4-layer linear self-attention (LSA) with LayerNorm, 1 head(s), width 16, no MLP, trained with `iclbench train` (command in submission.yaml)."""

from iclbench.models.plugin import TrainedModel


class Trained(TrainedModel):
    name = 'lsa-norm-4l-logistic'

"""8-layer looped (one tied layer applied 8 times) linear self-attention (LSA) with LayerNorm, 1 head(s), width 32, no MLP, trained with `iclbench train` (command in submission.yaml)."""

from iclbench.models.plugin import TrainedModel


class Trained(TrainedModel):
    name = 'looped-lsa-norm-lasso'

"""The baseline algorithms, each an `iclbench.Model`, installed as `iclbench.baselines`.

`REGISTRY` maps the names `iclbench run --model NAME` accepts to "module:Class".
"""

REGISTRY: dict[str, str] = {
    "zero": "zero:Zero",
    "ridge": "ridge:Ridge",
    "ols": "ridge:LeastSquares",
    "averaging": "averaging:Averaging",
    "gd": "gd:GradientDescent",
    "newton": "newton:Newton",
    "newton3": "newton:Newton3",
    "ista": "proximal:ISTA",
    "fista": "proximal:FISTA",
    "lasso-exact": "proximal:LassoExact",
    "lista": "lista:LISTA",
    "lista-cp": "lista:LISTACP",
    "alista": "lista:ALISTA",
    "logistic-optimum": "oracles:LogisticOptimum",
    "gp-posterior": "oracles:GPPosterior",
    "true-w": "oracles:TrueW",
    "noise-oracle": "oracles:NoiseOracle",
    "select-bayes": "selection:SelectBayes",
    "ridge-fixed": "selection:RidgeFixed",
}

"""Each registry's names and one-line descriptions, without importing torch.

The registries (one dict per swappable kind: ``ESTIMATORS``, ``GUIDES``, …) live next to the
code of their entries, in modules that import torch, Pyro and torchvision. The command line's
parser lists the names and descriptions (``--help``) and checks a name as it parses, so that
``pyrovae --help`` and a mistyped flag answer at once: it reads these copies instead.
``tests/test_startup.py`` asserts that each copy equals its live registry (the same names in
the same order, each with :func:`~pyrovae.core.registry.describe`'s text), so a new entry
without its line here fails there. :data:`LIVE` names where each registry lives.
"""

from __future__ import annotations

DATASETS = {
    "fashion-mnist": "Zalando's 28×28 clothing images, 60 000 + 10 000 test, 10 classes",
    "mnist": "28×28 handwritten digits, 60 000 + 10 000, 10 classes",
    "kmnist": "Kuzushiji-MNIST: 28×28 cursive Japanese, 10 classes",
    "emnist-byclass": "EMNIST's byclass split: 28×28 handwriting",
    "emnist-bymerge": "EMNIST's bymerge split: 28×28 handwriting",
    "emnist-balanced": "EMNIST's balanced split: 28×28 handwriting",
    "emnist-letters": "EMNIST's letters split: 28×28 handwriting",
    "emnist-digits": "EMNIST's digits split: 28×28 handwriting",
    "emnist-mnist": "EMNIST's mnist split: 28×28 handwriting",
    "cifar10": "32×32 colour photographs, 50 000 + 10 000 test, 10 classes",
    "svhn": "32×32 colour house-number digits (needs scipy), 10 classes",
    "celeba": "celebrity faces, 178×218 colour (use --image-size), unlabelled",
    "omniglot": "105×105 handwritten characters of 50 alphabets (background set)",
}
PIXEL_MODES = {
    "dynamic": "x ~ Bernoulli(intensity), redrawn every epoch",
    "static": "x ~ Bernoulli(intensity), drawn once (seeded)",
    "grey": "intensities in [0, 1] as they are",
    "8bit": "the 256 levels k/255 of 8-bit images",
}
ESTIMATORS = {
    "elbo": "ELBO (1/K) Σ_k log w_k with pathwise gradients: Pyro's Trace_ELBO, the default",
    "analytic-kl": "ELBO with KL(q ‖ p) in closed form: lower variance; an error where it has none",
    "iwae": "importance-weighted bound L_K = log (1/K) Σ_k w_k, tighter than the ELBO",
    "iwae-dreg": "L_K with the doubly-reparameterized encoder gradient: SNR not decaying in K",
    "miwae": "MIWAE(M, K): the mean of M IWAE bounds of K samples each (miwae:M; M = 8)",
    "ciwae": "CIWAE(β) = β·ELBO + (1 − β)·IWAE on the same K samples (ciwae:β; β = 0.5)",
    "piwae": "PIWAE(M, K): the model climbs IWAE(MK), the guide MIWAE(M, K) (piwae:M; M = 8)",
    "fisher": "Fisher AE (Elkhalil et al. 2021): Fisher divergence of the joints, not a bound",
    "elbo-stl": "ELBO with the sticking-the-landing gradient (the score term dropped)",
    "score-function": "ELBO by the log-derivative trick, no reparameterization: high variance",
    "score-function-loo": (
        "score-function with the leave-one-out baseline (K ≥ 2): much lower variance"
    ),
    "nvil": "ELBO by the score function with NVIL's learned baseline (discrete latents)",
    "vimco": "L_K by the score function, leave-one-out baselines (Mnih & Rezende 2016)",
    "rws": "reweighted wake-sleep: θ on L_K, φ by wake-φ Σ w̃ ∇ log q (not one objective)",
    "enumerate": "discrete codes: exact sum over every state of the code; no variance, S× cost",
    "gumbel-softmax": (
        "discrete codes: relaxed (Concrete) draw at an annealed τ; biased, low variance"
    ),
    "straight-through": "discrete codes: hard draw forward, relaxed gradient backward (biased)",
}
LIKELIHOODS = {
    "bernoulli": "Bernoulli per pixel: binarized images (dynamic, static)",
    "continuous-bernoulli": "continuous Bernoulli on [0, 1]: grey or binary pixels",
    "gaussian": "Normal with σ = 0.1 fixed: squared error on grey pixels",
    "gaussian-learned": "Normal with a learned σ per pixel: grey pixels",
    "laplace": "Laplace with the std of `gaussian`: absolute error on grey pixels",
    "discretized-logistic": "discretized logistic per channel value: 8-bit images (--pixels 8bit)",
}
GUIDES = {
    "normal": "diagonal Normal N(μ, diag σ²)",
    "full-covariance": "Normal with a full covariance L Lᵀ",
    "laplace": "diagonal Laplace: heavier tails than the Normal",
    "student-t": "diagonal Student-t with 5 degrees of freedom",
    "logistic": "diagonal logistic",
    "flow": "diagonal Normal through 2 inverse autoregressive flow layers",
    "delta": "point mass at the encoder's output: the autoencoder (use with β = 0)",
    "categorical": "discrete: G groups of a C-way one-hot (G = --latent-dim, C = --categories)",
    "bernoulli": "discrete: n binary units (n = --latent-dim), as in sigmoid belief nets",
}
PRIORS = {
    "normal": "standard Normal N(0, I)",
    "mixture": "learned mixture of 10 diagonal Normals",
    "vamp": "VampPrior: q(z|u) averaged over 100 learned pseudo-inputs u (slow)",
    "conditional": "learned p(z|c) = N(μ(c), diag σ(c)²) (with --conditional or --condition-on)",
    "categorical": "discrete: uniform over the C categories of each group (--guide categorical)",
    "bernoulli": "discrete: n fair binary units, p = ½ each (--guide bernoulli)",
}
NETS = {
    "mlp": "fully connected layers of the --hidden sizes (reversed in the decoder)",
    "conv": "two stride-2 convolutions (side → side/2 → side/4), then --hidden; ≥ 4×4 images",
}
CONDITIONAL_MODELS = {
    "cvae": "recognition network q(z|x, c): the conditional VAE",
    "gsnn": "trained with q = p(z|c) (--prior conditional): GSNN",
    "baseline": "no latent: a network from c to p(x|c)",
}
ACTIVATIONS = {
    "relu": "max(0, x): the rectified linear unit",
    "softplus": "log(1 + eˣ): a smooth max(0, x)",
    "tanh": "tanh x = (eˣ − e⁻ˣ)/(eˣ + e⁻ˣ), in (−1, 1)",
    "elu": "x for x > 0, else eˣ − 1: the exponential linear unit",
}
LR_SCHEDULES = {
    "constant": "f = 1: lr throughout",
    "burda": "f = 10^(−i/7) in stage i = 0, 1, …, which lasts 3^i epochs (Burda et al. 2015)",
    "cosine": "f = ½(1 + cos πt/T): from lr down to 0 over the run's T steps",
}
TEST_SPLITS = {
    "stratified": "Random under --split-seed, each class keeping its share of the test images",
    "file-order": "Before --test-split: one fixed seed, not stratified, kept in file order",
}
# evaluate --method and --ais-from: names only (their help says what each does)
LOG_PX_METHODS = ("is", "ais", "bdmc")
AIS_STARTS = ("guide", "prior")

# copy ↦ (module, name) of the live registry it mirrors
LIVE = {
    "DATASETS": ("pyrovae.data.files", "DATASETS"),
    "PIXEL_MODES": ("pyrovae.data.base", "PIXEL_MODES"),
    "ESTIMATORS": ("pyrovae.inference.estimators", "ESTIMATORS"),
    "LIKELIHOODS": ("pyrovae.models.likelihoods", "LIKELIHOODS"),
    "GUIDES": ("pyrovae.guides.families", "GUIDES"),
    "PRIORS": ("pyrovae.models.prior", "PRIORS"),
    "NETS": ("pyrovae.nets", "NETS"),
    "CONDITIONAL_MODELS": ("pyrovae.runs.conditional", "CONDITIONAL_MODELS"),
    "ACTIVATIONS": ("pyrovae.nets.dense", "ACTIVATIONS"),
    "LR_SCHEDULES": ("pyrovae.inference.schedules", "LR_SCHEDULES"),
    "TEST_SPLITS": ("pyrovae.data.splits", "TEST_SPLITS"),
    "LOG_PX_METHODS": ("pyrovae.runs.evaluate", "METHODS"),
    "AIS_STARTS": ("pyrovae.inference.annealing", "START"),
}

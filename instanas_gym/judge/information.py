"""TODO."""




import numpy as np


# ---- what the choice says about the image --------------------------------------------------------
def mutual_information_bits(x: np.ndarray, y: np.ndarray) -> float:
    """Plug-in mutual information (bits) of two discrete label arrays of equal length: 0 for
    independent arrays, H(x) for ``x == y``. Biased upwards on few samples per cell of the joint
    table (a policy with a different architecture per image scores H(y)); compare it with
    :func:`permutation_mi_bits`."""
    x, y = np.asarray(x).ravel(), np.asarray(y).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape} and {y.shape}")
    if not len(x):
        return 0.0
    xi, yi = np.unique(x, return_inverse=True)[1], np.unique(y, return_inverse=True)[1]
    joint = np.zeros((xi.max() + 1, yi.max() + 1))
    np.add.at(joint, (xi, yi), 1.0)
    joint /= len(x)
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return max(0.0, float((joint[nz] * np.log2(joint[nz] / outer[nz])).sum()))

def permutation_mi_bits(x: np.ndarray, y: np.ndarray, rounds: int = 20, seed: int = 0) -> float:
    """Mean :func:`mutual_information_bits` of ``x`` with ``y`` shuffled (bits): what the plug-in
    estimate gives with no dependence at all, for these marginals and this many samples."""
    rng = np.random.default_rng(seed)
    return float(np.mean([mutual_information_bits(x, rng.permutation(np.asarray(y))) for _ in range(rounds)]))

def conditional_mutual_information_bits(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Plug-in conditional mutual information I(x; y | z) (bits): the mutual information of ``x`` and
    ``y`` within each value of ``z``, weighted by its frequency. With ``z`` the class: what the
    choice ``x`` says about ``y`` (e.g. the difficulty) beyond what the class already says."""
    x, y, z = (np.asarray(a).ravel() for a in (x, y, z))
    if not x.shape == y.shape == z.shape:
        raise ValueError(f"x, y and z must have the same length, got {x.shape}, {y.shape} and {z.shape}")
    if not len(x):
        return 0.0
    values, inverse = np.unique(z, return_inverse=True)
    return float(sum(np.mean(inverse == v) * mutual_information_bits(x[inverse == v], y[inverse == v])
                     for v in range(len(values))))

def permutation_cmi_bits(x: np.ndarray, y: np.ndarray, z: np.ndarray, rounds: int = 20, seed: int = 0) -> float:
    """Mean :func:`conditional_mutual_information_bits` with ``y`` shuffled within each value of
    ``z`` (bits): what the estimate gives when ``x`` says nothing about ``y`` beyond ``z``."""
    y, z = np.asarray(y).ravel(), np.asarray(z).ravel()
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(z == v) for v in np.unique(z)]
    rounds_bits = []
    for _ in range(rounds):
        shuffled = y.copy()
        for g in groups:
            shuffled[g] = y[rng.permutation(g)]
        rounds_bits.append(conditional_mutual_information_bits(x, shuffled, z))
    return float(np.mean(rounds_bits))

def difficulty_bins(loss: np.ndarray, bins: int = 5) -> np.ndarray:
    """Quantile bin (int64, 0 = easiest, ``bins - 1`` = hardest) of each image's loss: images ranked
    by loss (ties in index order) and cut into ``bins`` groups of equal size (+-1)."""
    loss = np.asarray(loss, dtype=np.float64).ravel()
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    ranks = np.empty(len(loss), dtype=np.int64)
    ranks[np.argsort(loss, kind="stable")] = np.arange(len(loss))
    return ranks * bins // max(len(loss), 1)

"""Chi-square goodness of fit without scipy."""
import torch


def chi_square_p_value(observed: torch.Tensor, expected_probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """p-value of observed counts against expected probabilities; cells expected below min_expected are pooled."""
    observed = observed.double().flatten()
    expected = expected_probs.double().flatten() / expected_probs.sum() * observed.sum()
    small = expected < min_expected
    obs = torch.cat([observed[~small], observed[small].sum().reshape(1)])
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = exp > 0
    if bool((obs[~keep] > 0).any()):
        return 0.0  # mass where the reference has none
    obs, exp = obs[keep], exp[keep]
    stat = ((obs - exp) ** 2 / exp).sum()
    dof = max(len(obs) - 1, 1)
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.double), stat / 2))

"""How training compute is counted (README, "How compute is counted").

Dense-equivalent FLOPs with the 6·P rule of Kaplan et al. 2020: forward 2·P and backward
4·P multiply-adds per token, where P = 2·d_in·n_latents is the parameter count of the two
matmuls (W_enc and W_dec). Biases, TopK selection, AuxK and the optimiser are not
counted, as in Gao et al. 2024 whose L(C) uses the same convention, so compute is
comparable across implementations (a sparse decoder does not make the count smaller).
"""


def flops_per_token(d_in: int, n_latents: int) -> float:
  """Training FLOPs per token: 6 * (2 * d_in * n_latents)."""
  return 12.0 * d_in * n_latents


def training_flops(d_in: int, n_latents: int, tokens: int) -> float:
  """Training compute in FLOPs after `tokens` training tokens."""
  return flops_per_token(d_in, n_latents) * float(tokens)

"""raycad: fine-tune and hyper-parameter-tune the Caduceus DNA foundation model with Ray.

Sub-packages, one per concern: `raycad.model` (Caduceus in pure PyTorch), `raycad.data` (sequences to
token batches with Ray Data), `raycad.train` (Ray Train fine-tuning), `raycad.tune` (Ray Tune + Optuna
searches), `raycad.launch` (Ray jobs, clusters and SageMaker). `raycad.config` holds the typed config.
"""

__version__ = "0.1.0"

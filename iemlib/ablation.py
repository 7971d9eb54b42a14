"""IEM's ablation (the paper's Table II): network and data augmentation switched on and off.

Network augmentation (NA) is the filter-wise perturbation of θ_init (off: ``perturb="none"``);
data augmentation (DA) is multi-formation (off: ``factor=1``). On, each keeps IEM's default.
"""

from __future__ import annotations

from .experiment import Config
from .paper import table2_rows

Switches = tuple[bool, bool]  # (NA, DA)


def ablation_config(na: bool, da: bool, **settings) -> Config:
    """IEM with NA and DA on or off; ``settings`` are the other Config fields."""
    return Config(method="iem", perturb=None if na else "none", factor=None if da else 1,
                  **settings)


def table2_cells(dataset: str = "cifar10", ipc: int | None = None, **settings) -> list[dict]:
    """Table II's rows of ``dataset``, each with the Config that reproduces it.

    ``ipc`` replaces the paper's (a small profile cannot hold 50 images a class); ``settings``
    are the other Config fields (profile, seed, bits, hash). Rows: dataset, ipc (the paper's),
    na, da, paper (mAP %), config.
    """
    rows = table2_rows(dataset)
    if not rows:
        raise ValueError(f"the paper's Table II has no rows for {dataset!r}")
    return [{**{k: v for k, v in row.items() if k != "map"}, "paper": row["map"],
             "config": ablation_config(row["na"], row["da"], dataset=dataset,
                                       ipc=ipc or row["ipc"], **settings)}
            for row in rows]


def cannot_run(config: Config) -> str | None:
    """Why ``config`` cannot run, or None when it can.

    An invalid setting (``Config.resolved`` says which), or a multi-formation factor that does
    not split the images into whole tiles.
    """
    try:
        resolved = config.resolved()
    except ValueError as error:
        return str(error)
    if resolved.factor and resolved.image_size % resolved.factor:
        return (f"{resolved.image_size} px images do not split into "
                f"{resolved.factor} × {resolved.factor} tiles")
    return None


def ablation_claims(scores: dict[Switches, float]) -> dict[str, bool]:
    """The paper's ablation claims (Section IV-E), checked on scores keyed by (NA, DA).

    Either augmentation alone beats neither; both together beat every other combination.
    """
    missing = {(na, da) for na in (False, True) for da in (False, True)} - set(scores)
    if missing:
        raise ValueError(f"ablation_claims needs every (NA, DA); missing {sorted(missing)}")
    none, both = scores[False, False], scores[True, True]
    return {
        "NA alone beats neither": scores[True, False] > none,
        "DA alone beats neither": scores[False, True] > none,
        "NA and DA together are best": both > max(scores[True, False], scores[False, True], none),
    }

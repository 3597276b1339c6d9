"""Which ImplicitMeshNet ``tau`` do validation labels support? The likelihood of the label under ``sigmoid(-D / tau)``.

Usage:
    python Testing/benchmarks/implicitmeshnet_tau.py [--data ../shared/data/hippocampus] [--cases 8]
        [--config cpu-v2] [--sdf-net RUN/sdf_pretrained.safetensors]

For the first ``--cases`` cases of the ``val`` split of ``Resources/Splits/hippocampus.json``
(never ``test``), the label is put on the model grid as training does and the ImplicitMeshNet
template is fitted to it (:func:`~imagetomesh.training.implicitmeshnet_shapes.fit_template_to_label`,
the run's ``FIT_WEIGHTS`` and ``fit_steps``): the best mesh of the template's topology. ``D`` is its
SDF on the grid, exact (:func:`~imagetomesh.nn.sdf.grid_sdf`, as ``g_phi``'s targets) and, with
``--sdf-net``, as a ``g_phi`` of the config predicts it. Printed per candidate ``tau``: the mean over
cases of the end-to-end loss's BCE of ``sigmoid(-D / tau)`` against the label, and the ``tau``
minimising it (the maximum-likelihood temperature: the boundary uncertainty that the label's
voxelisation, the template's topology and ``g_phi``'s error leave; a smaller ``tau`` asks ``f_theta``
to fix errors ``g_phi`` makes, a larger one blurs the boundary the loss sees). Tau in isotropic grid
units and in voxels (one voxel = 2 / (max grid size - 1)).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imagetomesh.geometry.topology import icosphere
from imagetomesh.models.implicitmeshnet import ImplicitMeshNetConfig, MeshToSDF, MeshToSDFConfig
from imagetomesh.nn.grid import isotropic_scale, isotropic_voxel_size
from imagetomesh.nn.sdf import grid_sdf
from imagetomesh.training.data import prepare_case
from imagetomesh.training.implicitmeshnet_shapes import fit_template_to_label
from imagetomesh.training.msd import read_msd
from imagetomesh.training.tasks.implicitmeshnet import FIT_WEIGHTS, get_implicitmeshnet_config

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hippocampus")
    parser.add_argument("--cases", type=int, default=8, help="first N validation cases")
    parser.add_argument("--config", default="cpu-v2", help="implicitmeshnet config (grid, template, g_phi, fit steps)")
    parser.add_argument("--sdf-net", type=Path, default=None, help="g_phi weights of that config (safetensors)")
    parser.add_argument("--voxels", default="0.15,0.2,0.27,0.35,0.48,0.64,0.8,1.0", help="candidate tau, in voxels")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = get_implicitmeshnet_config(args.config)
    shape = config.grid.shape
    scale, voxel = isotropic_scale(shape), isotropic_voxel_size(shape)
    taus = [float(t) * voxel for t in args.voxels.split(",")]
    sphere, faces = icosphere(ImplicitMeshNetConfig(**config.model).template_level)
    g_net = None
    if args.sdf_net:
        from safetensors.torch import load_file

        g_net = MeshToSDF(MeshToSDFConfig(**config.sdf_net)).eval()
        g_net.load_state_dict(load_file(str(args.sdf_net)))
    split = json.loads((REPO / "Resources" / "Splits" / "hippocampus.json").read_text(encoding="utf-8"))
    msd = read_msd(args.data)
    sources = {"exact": []} | ({"g_phi": []} if g_net is not None else {})
    started = time.perf_counter()
    for case_id in split["val"][: args.cases]:
        label = prepare_case(msd[case_id], config.grid).label
        verts = fit_template_to_label(sphere, faces, label, FIT_WEIGHTS, config.fit_steps)
        fields = {"exact": grid_sdf(verts, faces, shape, scale, config.truncation, far_field=True)}
        if g_net is not None:
            with torch.no_grad():
                fields["g_phi"] = g_net(verts[None], _edges(faces), shape)[-1][0, 0]
        for name, sdf in fields.items():
            sources[name].append([float(F.binary_cross_entropy_with_logits(-sdf / tau, label.float())) for tau in taus])
    print(f"{args.cases} val cases, {time.perf_counter() - started:.0f} s; voxel = {voxel:.4f} grid units\n")
    print("| tau (voxels) | tau (grid units) | " + " | ".join(f"BCE {n}" for n in sources) + " |")
    print("|---|---|" + "---|" * len(sources))
    means = {n: np.mean(np.array(v), axis=0) for n, v in sources.items()}
    for i, tau in enumerate(taus):
        print(f"| {tau / voxel:.2f} | {tau:.4f} | " + " | ".join(f"{means[n][i]:.4f}" for n in sources) + " |")
    for name, m in means.items():
        best = int(np.argmin(m))
        print(f"\nmaximum-likelihood tau ({name}): {taus[best] / voxel:.2f} voxel = {taus[best]:.4f}")


def _edges(faces: torch.Tensor) -> torch.Tensor:
    from imagetomesh.geometry.topology import edge_index_from_faces

    return edge_index_from_faces(faces)


if __name__ == "__main__":
    main()

"""Train the soft cord model: one command, fixed seed, logged, checkpointed, resumable.

    python -m SoftSpinalCordSegTraining.train --data ../shared/data --run runs/main --iterations 6000
    python -m SoftSpinalCordSegTraining.train --run runs/main --resume          # continue after a stop
    python -m SoftSpinalCordSegTraining.train --run runs/main --export SoftSpinalCordSeg/Resources/Models

Data: synthetic slices from PAM50 + spine-generic label maps (never subject unf01) and real labelled
sub-05 MT-on slices; validation on unf01 (T1w, T2star, T2w), which is never trained on.
Loss: binary cross-entropy on the soft (partial-volume) targets, a proper scoring rule whose optimum is the
expected cord fraction, so the summed probability (the CSA) is unbiased; --loss mse for the comparison.
On a CUDA GPU (taken by --device auto) the data-generating processes are the limit: give it --workers
(one H100 with 15 workers: 14 iterations/s on synthetic slices). CPU runs are bit-reproducible, GPU runs not.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from SoftSpinalCordSegLib.model import DIVISOR, FEATURES, NORMALISED_RANGE, build_network
from .synth import (OBLIQUE_THICKNESS_MM, OBLIQUE_TILT_DEG, OUT_PX, VALIDATION_SUBJECT, WINDOW_PX, SliceGenerator,
                    pair_count)

REAL_TRAINING_PAIRS = [("real/tutorial/sub-05_acq-MTon_MTS.nii.gz", "real/tutorial/sub-05_acq-MTon_MTS_seg.nii.gz")]
VALIDATION = [
    (f"real/unf01/sub-{VALIDATION_SUBJECT}_{c}.nii.gz", f"real/unf01/sub-{VALIDATION_SUBJECT}_{c}_seg-manual.nii.gz")
    for c in ("T1w", "T2star", "T2w")
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("SOFTSEG_DATA", "../shared/data"))
    p.add_argument("--run", required=True, help="run folder: log, checkpoints")
    p.add_argument("--iterations", type=int, default=6000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", choices=["bce", "mse"], default="bce")
    p.add_argument("--no-real", action="store_true", help="synthetic data only (ablation)")
    p.add_argument("--no-synthetic", action="store_true", help="real labelled slices only (ablation)")
    p.add_argument("--binary-targets", action="store_true", help="threshold targets at 0.5 (ablation)")
    p.add_argument("--real-fraction", type=float, default=0.1, help="share of real labelled slices in a batch")
    p.add_argument("--pseudo-labels", metavar="DIR",
                   help="self-training: add the (image, soft mask) pairs of DIR/pairs.json (SoftSpinalCordSegTraining/pseudo_label.py)"
                        " to the real labelled slices")
    p.add_argument("--exclude-real", action="append", default=[], metavar="TEXT",
                   help="leave out the real labelled images whose path contains TEXT (held-out tests)")
    p.add_argument("--rater-margin", type=float, default=0.0, metavar="MM",
                   help="render synthetic cords this much (x0.5-1.5) wider than their target: the raters' edge")
    p.add_argument("--window-fraction", type=float, default=0.0,
                   help="share of batches cropped to the 64 px cord windows that inference segments")
    p.add_argument("--window-sizes", type=int, nargs="+", default=[WINDOW_PX], metavar="PX",
                   help="side of those windows, drawn per batch among these (one context size or several)")
    p.add_argument("--area-loss", type=float, default=0.0, metavar="WEIGHT",
                   help="add this weight times the relative error of each slice's soft cord area (its CSA) to the "
                        "loss (atrophic cords read too large; the model card has what it costs in squeezes and lesions)")
    p.add_argument("--consistency", type=float, default=0.0, metavar="WEIGHT",
                   help="real slices in pairs of two intensity versions (two 'contrasts' of one anatomy), their "
                        "cord fractions pulled together by this weight times their mean squared difference "
                        "(needs --no-synthetic, or --paired-share below 1)")
    p.add_argument("--paired-share", type=float, default=1.0, metavar="SHARE",
                   help="with --consistency: share of each batch made of those pairs, the rest drawn as without it")
    p.add_argument("--cross-contrast", type=float, default=0.0, metavar="SHARE",
                   help="with --consistency: this share of the pairs are two co-registered real contrasts of one "
                        "slice that share one label (MT-on and MT-off, the DWI's views) instead of two intensity versions")
    p.add_argument("--labelled", nargs=3, action="append", default=[], metavar=("IMAGE", "MASK", "REPEAT"),
                   help="another real image with a manual mask (paths under --data), its slices listed REPEAT times")
    p.add_argument("--pathology", action="store_true",
                   help="real slices sometimes get a lesion, compression or atrophy of known truth (pathology.py)")
    p.add_argument("--compression", type=float, default=None, metavar="SHARE",
                   help="with --pathology: share of real slices compressed (default pathology.COMPRESSION_PROBABILITY)")
    p.add_argument("--band-squeeze", type=float, default=None, metavar="SHARE",
                   help="with --pathology: share of the compressions that squeeze a band of the canal, walls and "
                        "edge blur included (pathology.ap_band_squeeze), not the cord alone")
    p.add_argument("--atrophy", type=float, default=None, metavar="SHARE",
                   help="with --pathology: share of real slices made atrophic (default pathology.ATROPHY_PROBABILITY)")
    p.add_argument("--inverted-pairs", type=float, default=0.0, metavar="SHARE",
                   help="with --consistency: this share of the pairs are a slice and its grey levels inverted")
    p.add_argument("--oblique", type=float, default=0.0, metavar="SHARE",
                   help="share of the real slices cut as oblique sections (synth.oblique_section: the cord tilted "
                        "{:g}-{:g} degrees to the slice normal, slices {:g}-{:g} mm thick)".format(
                            *OBLIQUE_TILT_DEG, *OBLIQUE_THICKNESS_MM))
    p.add_argument("--features", type=int, nargs=6, default=list(FEATURES), metavar="N",
                   help="channels of the UNet's levels (MONAI BasicUNet features)")
    p.add_argument("--teacher", metavar="MODEL_DIR",
                   help="distil: the targets are this exported model's mean reading of each slice as it is and "
                        "inverted (what segment reads in two passes, learnt in one)")
    p.add_argument("--init", metavar="RUN", help="start from the weights of another run's last.pt (fine-tuning)")
    p.add_argument("--pam50-slabs", type=int, default=1500)
    p.add_argument("--validate-every", type=int, default=500)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--workers", type=int, default=1, help="data-generating processes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when present")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with AVX512-BF16/AMX)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-after", type=int, metavar="N", help="checkpoint and stop at iteration N (resume later)")
    p.add_argument("--export", metavar="DIR", help="export the last checkpoint's weights to DIR and exit")
    p.add_argument("--from-export", metavar="DIR",
                   help="make --run a checkpoint of the exported weights in DIR (to --init a fine-tune from them) and exit")
    args = p.parse_args(argv)
    if any(side % DIVISOR or not DIVISOR <= side <= OUT_PX for side in args.window_sizes):
        p.error(f"--window-sizes: each must be a multiple of {DIVISOR} from {DIVISOR} to {OUT_PX} (the training canvas)")
    if args.consistency and not args.no_synthetic and args.paired_share >= 1:
        p.error("--consistency pairs real slices only: add --no-synthetic, or --paired-share below 1")
    if not 0 < args.paired_share <= 1 or (args.paired_share < 1 and not args.consistency):
        p.error("--paired-share is a share in (0, 1] of the batches of --consistency: add --consistency WEIGHT")
    if args.inverted_pairs and not args.consistency:
        p.error("--inverted-pairs chooses the pairs of --consistency: add --consistency WEIGHT")
    if (args.compression is not None or args.atrophy is not None or args.band_squeeze is not None) and not args.pathology:
        p.error("--compression, --band-squeeze and --atrophy set the shares of --pathology: add --pathology")
    if args.cross_contrast and not args.consistency:
        p.error("--cross-contrast chooses the pairs of --consistency: add --consistency WEIGHT")
    for name in ("init", "pseudo_labels", "teacher"):  # kept in the checkpoint; --export may run from another folder
        if getattr(args, name):
            setattr(args, name, str(Path(getattr(args, name)).resolve()))
    return args


class _Stream:
    """Endless batches from a SliceGenerator in a worker process (torch IterableDataset)."""

    def __init__(self, args, seed):
        import torch

        class Dataset(torch.utils.data.IterableDataset):
            def __iter__(self_inner):
                info = torch.utils.data.get_worker_info()
                worker_seed = seed * 1000 + (info.id if info else 0)
                gen = make_generator(args, worker_seed)
                while True:
                    x, y = gen.batch(args.batch)
                    yield torch.from_numpy(x), torch.from_numpy(y)

        self.loader = torch.utils.data.DataLoader(
            Dataset(), batch_size=None, num_workers=args.workers, prefetch_factor=4 if args.workers else None,
            persistent_workers=bool(args.workers),
        )

    def __iter__(self):
        return iter(self.loader)


def labelled_pairs(exclude_real=(), labelled=()):
    """REAL_TRAINING_PAIRS and the --labelled ones (paths under the data folder; each of those listed REPEAT
    times) less those whose image path contains a text of exclude_real (--exclude-real)."""
    pairs = REAL_TRAINING_PAIRS + [(image, mask) for image, mask, repeat in labelled for _ in range(int(repeat))]
    return [(image, mask) for image, mask in pairs if not any(text in image for text in exclude_real)]


def real_pairs(args):
    """(image, mask) paths of the real slices trained on: the labelled ones, then any pseudo-labelled ones."""
    if args.no_real:
        return []
    labelled, extra = real_sources(args.exclude_real, args.pseudo_labels, args.labelled)
    pairs = [(os.path.join(args.data, a), os.path.join(args.data, b)) for a, b in labelled]
    return pairs + [(p["image"], p["label"]) for p in extra for _ in range(p.get("repeat", 1))]


def real_sources(exclude_real, pseudo_labels, labelled=()):
    """(labelled (image, mask) pairs kept, entries of the pairs.json of pseudo_labels): an entry for a labelled
    image replaces it (SoftSpinalCordSegTraining/pseudo_label.py --consensus lists sub-05 with its manual mask)."""
    extra = pseudo_label_pairs(pseudo_labels) if pseudo_labels else []
    given = {p["source"] for p in extra}
    return [pair for pair in labelled_pairs(exclude_real, labelled) if pair[0] not in given], extra


def pseudo_label_pairs(folder):
    """The entries of folder/pairs.json: image, label (soft teacher output or a manual mask), source (the
    original image) and, from --consensus, label_from (how the label was made) and repeat (times listed)."""
    return json.loads((Path(folder) / "pairs.json").read_text())["pairs"]


def make_generator(args, seed):
    pairs = real_pairs(args)
    synthetic = 1 - args.real_fraction
    weights = (0.0, 0.0, 1.0) if args.no_synthetic else (synthetic * 5 / 9, synthetic * 4 / 9, args.real_fraction)
    return SliceGenerator(args.data, seed=seed, n_pam50=0 if args.no_synthetic else args.pam50_slabs,
                          real_pairs=pairs, weights=weights, rater_margin_mm=args.rater_margin,
                          window_fraction=args.window_fraction, window_sizes=args.window_sizes, paired=args.paired_share if args.consistency else False,
                          cross_contrast=args.cross_contrast, pathology=pathology_mix(args),
                          inverted_pairs=args.inverted_pairs, oblique=args.oblique)


def pathology_mix(args):
    """False, True (the default probabilities) or random_pathology's keyword arguments from --compression,
    --atrophy and --band-squeeze."""
    shares = {"compression": getattr(args, "compression", None), "atrophy_share": getattr(args, "atrophy", None),
              "band_share": getattr(args, "band_squeeze", None)}
    shares = {k: v for k, v in shares.items() if v is not None}
    return (shares or True) if args.pathology else False


def validate(net, data_dir, device="cpu"):
    """Dice (soft >= 0.5 vs manual) and soft volume / manual volume on the validation subject, per contrast."""
    import nibabel as nib

    from SoftSpinalCordSegLib.inference import canonical_view, segment_canonical
    from SoftSpinalCordSegLib.morphometry import dice

    results = {}
    net.eval()
    for image_path, mask_path in VALIDATION:
        img = nib.load(os.path.join(data_dir, image_path))
        manual = np.asanyarray(nib.load(os.path.join(data_dir, mask_path)).dataobj) > 0.5
        canonical, spacing, back = canonical_view(img.get_fdata(dtype=np.float32), img.affine)
        prob = back(segment_canonical(net, canonical, spacing, device))  # in float32, where the export may run in bf16
        pred = prob >= 0.5
        overlap = dice(pred, manual)
        contrast = image_path.split("_")[-1].split(".")[0]
        results[contrast] = {"dice": round(overlap, 4), "csa_ratio": round(float(prob.sum() / manual.sum()), 4)}
    net.train()
    return results


def load_teacher(model_dir, device):
    """callable(x) -> the exported model's mean reading of the normalised slices x and of x inverted
    (normalize_slice of the negated image is 1 - x, in the same clip)."""
    import torch

    from SoftSpinalCordSegLib.inference import input_dtype, load_network

    net = load_network(device, model_dir)

    def reading(x):
        with torch.no_grad():
            both = torch.cat([x, (1 - x).clamp(*NORMALISED_RANGE)]).to(device, input_dtype(net), memory_format=torch.channels_last)
            prob = torch.sigmoid(net(both).float())
            return ((prob[: len(x)] + prob[len(x):]) / 2).contiguous()

    return reading


def loss_function(kind):
    import torch.nn.functional as F

    if kind == "bce":
        return lambda logits, target: F.binary_cross_entropy_with_logits(logits, target)
    return lambda logits, target: F.mse_loss(logits.sigmoid(), target) * 10


AREA_LOSS_MIN_PX = 10  # slices whose target holds less cord than this (none, or its tip) are left out of area_loss


def area_loss(prob, target):
    """Mean relative error of the soft cord area of each slice of (n, 1, X, Y) that holds a cord."""
    target_area = target.sum(dim=(1, 2, 3))
    has_cord = target_area >= AREA_LOSS_MIN_PX
    if not bool(has_cord.any()):
        return prob.sum() * 0
    # clamped: a slice left out still takes part in the division, and 0 x 1/0 would make the gradients NaN
    error = (prob.sum(dim=(1, 2, 3)) - target_area).abs() / target_area.clamp(min=AREA_LOSS_MIN_PX)
    return error[has_cord].mean()


def real_training_images(config):
    """The real images a run learnt from, its --init runs' included (read from their checkpoints)."""
    import torch

    images = []
    if not config.get("no_real"):
        labelled, extra = real_sources(config.get("exclude_real", []), config.get("pseudo_labels"),
                                       config.get("labelled", []))
        images = list(dict.fromkeys(image for image, _ in labelled))  # each once, however often repeated
        images += [f"{p['source']}{' ' + p['view'] if 'view' in p else ''} ({p.get('label_from', 'pseudo-labelled')})"
                   for p in extra]
    init = config.get("init")
    if init and (Path(init) / "last.pt").is_file():
        parent = torch.load(Path(init) / "last.pt", map_location="cpu", weights_only=True)
        listed = {image.split(" (")[0] for image in images}  # "path[ view] (how it was labelled)"
        # a checkpoint made from exported weights (start_from_export) carries its model.json's list
        inherited = parent.get("real_training_images") or real_training_images(json.loads(parent["config"]))
        images += [i for i in inherited if i.split(" (")[0] not in listed]
    return images


PATH_OPTIONS = ("data", "run", "init", "pseudo_labels", "teacher")  # options naming folders of the training machine


def portable_config(config: dict) -> dict:
    """The run's options as model.json records them: folders by their name only, no machine's paths."""
    return {key: Path(value).name if key in PATH_OPTIONS and value else value for key, value in config.items()}


def export(run_dir, dest, args=None):
    """Write fp16 weights, the TorchScript architecture, their SHA-256 and model.json (training metadata)
    into dest."""
    import torch

    from SoftSpinalCordSegLib.inference import ARCHITECTURE_NAME, WEIGHTS_NAME, sha256_of
    from SoftSpinalCordSegLib.model import save_architecture

    ckpt = torch.load(Path(run_dir) / "last.pt", map_location="cpu", weights_only=True)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    weights = dest / WEIGHTS_NAME
    torch.save({k: v.half() for k, v in ckpt["model"].items()}, weights)
    config = json.loads(ckpt["config"])
    save_architecture(dest / ARCHITECTURE_NAME, config.get("features", FEATURES))
    for name in (WEIGHTS_NAME, ARCHITECTURE_NAME):
        (dest / (name + ".sha256")).write_text(f"{sha256_of(dest / name)}  {name}\n")
    meta = {"iteration": int(ckpt["iteration"]), "config": portable_config(config),
            "validation": json.loads(ckpt["validation"]),
            "real_training_images": real_training_images(config),
            "rater_margin_mm": float(config.get("rater_margin", 0.0))}
    (dest / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return weights


def start_from_export(model_dir, run_dir):
    """A run folder whose last.pt holds exported weights (fp32) and their model.json's training record, to
    fine-tune a shipped model with --init run_dir."""
    import torch

    from SoftSpinalCordSegLib.inference import WEIGHTS_NAME

    model_dir, run_dir = Path(model_dir), Path(run_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    state = torch.load(model_dir / WEIGHTS_NAME, map_location="cpu", weights_only=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {k: v.float() for k, v in state.items()}, "iteration": meta.get("iteration", 0),
                "config": json.dumps(meta.get("config", {})), "validation": json.dumps(meta.get("validation", {})),
                "real_training_images": meta.get("real_training_images", [])}, run_dir / "last.pt")
    return run_dir / "last.pt"


def main(argv=None):
    args = parse_args(argv)
    if args.from_export:
        print(start_from_export(args.from_export, args.run))
        return 0
    run = Path(args.run)
    if args.export:
        print(export(run, args.export))
        return 0
    import torch

    from SoftSpinalCordSegLib.errors import InputError
    from SoftSpinalCordSegLib.inference import resolve_device

    try:
        device = resolve_device(args.device)
    except InputError as error:
        raise SystemExit(f"train: error: {error}") from None
    run.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ckpt_path = run / "last.pt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True) if args.resume and ckpt_path.exists() else None
    if ckpt is not None:  # a resumed run keeps its recipe, its network's widths included
        for key, value in json.loads(ckpt["config"]).items():
            if key not in ("run", "data", "device"):
                setattr(args, key, value)
    net = build_network(args.features).to(device)
    teacher = load_teacher(args.teacher, device) if args.teacher else None
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.iterations, pct_start=0.05)
    start, validation = 0, {}
    if args.init and ckpt is None:
        net.load_state_dict(torch.load(Path(args.init) / "last.pt", map_location="cpu", weights_only=True)["model"])
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start, validation = int(ckpt["iteration"]), json.loads(ckpt["validation"])
    log = open(run / "train.log", "a")

    def say(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    config = {k: v for k, v in vars(args).items() if k not in ("resume", "export", "stop_after")}
    say(f"start at iteration {start}: {json.dumps(config)}")
    criterion = loss_function(args.loss)
    stream = iter(_Stream(args, seed=args.seed + start))  # a resumed run continues with fresh samples
    net.train()
    t0, losses = time.time(), []
    for it in range(start + 1, args.iterations + 1):
        x, y = (t.to(device, non_blocking=True) for t in next(stream))
        if teacher is not None:
            y = teacher(x)
        if args.binary_targets:
            y = (y >= 0.5).float()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=args.bf16):
            logits = net(x)
        logits = logits.float()
        loss = criterion(logits, y)
        if args.area_loss:
            loss = loss + args.area_loss * area_loss(logits.sigmoid(), y)
        if args.consistency:  # items 2n and 2n + 1 of the first pairs are two versions of one slice
            prob = logits[: 2 * pair_count(args.paired_share, len(logits))].sigmoid()
            loss = loss + args.consistency * torch.nn.functional.mse_loss(prob[0::2], prob[1::2])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if it % 50 == 0:
            say(f"it {it} loss {np.mean(losses):.4f} lr {sched.get_last_lr()[0]:.2e} {(time.time() - t0) / len(losses):.2f} s/it")
            t0, losses = time.time(), []
        if it % args.validate_every == 0 or it == args.iterations:
            validation = validate(net, args.data, device)
            say(f"validation it {it}: {json.dumps(validation)}")
        stopping = it == args.stop_after
        if it % args.checkpoint_every == 0 or it == args.iterations or stopping:
            state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "iteration": it, "config": json.dumps(config), "validation": json.dumps(validation)}
            torch.save(state, run / "last.tmp")
            os.replace(run / "last.tmp", ckpt_path)
        if stopping:
            say(f"stopped after iteration {it}: continue with --resume")
            return 0
    say("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

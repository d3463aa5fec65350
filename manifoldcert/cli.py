"""The ``manifoldcert`` command: ``train``, ``certify``, ``report``, ``demo``, ``bench``.

Run ``manifoldcert <command> --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch

from manifoldcert._validation import check_output_path
from manifoldcert.runs import add_run_arguments


def _device(name: str | None) -> str:
    """``--device``, else ``cuda:LOCAL_RANK`` under torchrun with CUDA, ``cuda``, or ``cpu``."""
    if name:
        return name
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"


def _cmd_train(args: argparse.Namespace) -> int:
    from manifoldcert import noises
    from manifoldcert.data import load_dataset
    from manifoldcert.train import RandomCropFlip, train_checkpoint

    check_output_path(args.out)
    train = load_dataset(args.dataset, "train", root=args.root)
    test = load_dataset(args.dataset, "test", root=args.root)
    if args.offsets != "torch" and args.noise != noises.DerandomizedSplittingNoise.name:
        raise ValueError("--offsets applies to --noise derandomized-splitting only")
    if args.noise == "none":
        noise = None
    elif args.noise == noises.DerandomizedSplittingNoise.name:
        # DSSN's offset vector is fixed by a seed that the checkpoint keeps, for the data set's grid and size.
        dim = int(torch.tensor(train.input_shape).prod())
        noise = noises.get(
            args.noise,
            sigma=args.sigma,
            levels=train.levels,
            offset_seed=args.offset_seed,
            offsets=args.offsets,
            dim=dim,
        )
    elif args.noise == noises.MeanScaledGaussian.name:
        noise = noises.get(args.noise, sigma=args.sigma, offset=args.offset)
    elif args.noise.startswith("zhang-"):
        noise = noises.get(args.noise, sigma=args.sigma, k=args.k)
    else:
        noise = noises.get(args.noise, sigma=args.sigma)
    recipe = _recipe_from_args(args)
    recipe.check_noise(noise)
    _, info = train_checkpoint(
        args.arch,
        train,
        noise,
        args.out,
        test=test,
        recipe=recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        augment=RandomCropFlip(padding=4) if args.augment == "crop-flip" else None,
        mixed_precision=args.amp,
        seed=args.seed,
        device=_device(args.device),
    )
    per_epoch = info.training["seconds_per_epoch"]
    print(
        f"saved {args.out} ({recipe!r}, {sum(per_epoch) / len(per_epoch):.1f} s per epoch): test accuracy "
        f"{info.training['test_accuracy_clean']:.3f} clean, {info.training['test_accuracy_noisy']:.3f} under the "
        "training noise"
    )
    return 0


#: ``train`` flags that set a recipe's hyper-parameters: flag destination → the recipe's parameter name.
_RECIPE_FLAGS = {
    "copies": "m",
    "lbd": "lbd",
    "eta": "eta",
    "margin": "gamma",
    "beta": "beta",
    "deferred_epochs": "deferred_epochs",
    "epsilon": "epsilon",
    "attack_steps": "steps",
    "warmup": "warmup",
}


def _recipe_from_args(args: argparse.Namespace):
    """The recipe ``--recipe`` names, with the hyper-parameter flags given; a flag it does not take is an error."""
    import inspect

    from manifoldcert.recipes import get_recipe, recipe_class

    cls = recipe_class(args.recipe)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    params = {}
    for dest, param in _RECIPE_FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if param not in accepted:
            takes = sorted("--" + d.replace("_", "-") for d, p in _RECIPE_FLAGS.items() if p in accepted)
            raise ValueError(
                f"--{dest.replace('_', '-')} does not apply to --recipe {args.recipe}"
                + (f" (it takes {', '.join(takes)})" if takes else " (it has no hyper-parameters)")
            )
        params[param] = value
    return get_recipe(args.recipe, **params)


def _cmd_certify(args: argparse.Namespace) -> int:
    from manifoldcert.runs import certify_with_args

    certifier, inputs, labels = _certifier_from_args(args)
    written = certify_with_args(certifier, inputs, labels, args.out, args)
    print(f"wrote {written}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from manifoldcert.runs import predict_with_args

    certifier, inputs, labels = _certifier_from_args(args)
    written = predict_with_args(certifier, inputs, labels, args.out, args)
    print(f"wrote {written}")
    return 0


def _certifier_from_args(args: argparse.Namespace):
    """The certifier, inputs and labels of ``certify`` / ``predict``: a checkpoint or ``--model``, a built-in data
    set or ``--image-folder`` / ``--imagenet-val``, and the method's options."""
    from manifoldcert import noises
    from manifoldcert.certifiers import get_certifier
    from manifoldcert.data import load_dataset
    from manifoldcert.models import check_compatible, load_checkpoint
    from manifoldcert.sources import load_model

    check_output_path(args.out)
    if (args.checkpoint is None) == (args.model is None):
        raise ValueError(
            "give exactly one of --checkpoint (a manifoldcert checkpoint) and --model (any model)"
        )
    if args.checkpoint is not None and (args.normalize or args.num_classes is not None):
        raise ValueError("--normalize and --num-classes go with --model; a checkpoint records its own")
    data, dataset_name, levels = _certify_data(args)
    if args.checkpoint is not None:
        model, info = load_checkpoint(args.checkpoint, device=_device(args.device))
        if data is None:
            dataset_name = args.dataset or info.dataset
            data = load_dataset(dataset_name, args.split, root=args.root)
            levels = data.levels
            check_compatible(info, dataset_name, data.input_shape)
        trained_noise = None if info.noise.get("name") == "none" else noises.from_config(info.noise)
        num_classes = getattr(data, "num_classes", None)
        inputs, labels = (data.inputs(), data.labels) if hasattr(data, "inputs") else (data, data.labels)
    else:
        if data is None:
            data = load_dataset(args.dataset or "digits", args.split, root=args.root)
            dataset_name, levels = args.dataset or "digits", data.levels
        num_classes = args.num_classes or getattr(data, "num_classes", None)
        if num_classes is None:
            raise ValueError("--num-classes is needed: the data set does not say how many classes it has")
        model = load_model(
            args.model,
            normalize=_parse_normalize(args.normalize),
            num_classes=num_classes,
            input_shape=data.input_shape,
            device=_device(args.device),
        )
        trained_noise = None
        inputs, labels = (data.inputs(), data.labels) if hasattr(data, "inputs") else (data, data.labels)
        if args.sigma is None and args.method not in ("functional", "unicr"):
            raise ValueError("--model carries no training noise: pass --sigma")
        args.checkpoint_file = args.model if os.path.isfile(args.model) else None
    options = _certifier_options(args.method, trained_noise, args.sigma)
    if args.metric is not None:
        if args.method != "rddrs":
            raise ValueError("--metric applies to --method rddrs only")
        options["metric"] = args.metric
    if args.method == "unicr":
        options.update(norm=args.norm, cache_dir=args.cache_dir)
    elif args.norm != "l2" or args.cache_dir is not None:
        raise ValueError("--norm and --cache-dir apply to --method unicr only")
    if args.dssn_radius is not None:
        if args.method != "dssn":
            raise ValueError("--dssn-radius applies to --method dssn only")
        options["radius"] = args.dssn_radius
    if args.sampling is not None:
        if args.method != "cohen":
            raise ValueError("--sampling applies to --method cohen only")
        if levels is None:
            raise ValueError("--sampling sound needs the data's quantisation (a built-in data set)")
        options.update(sampling=args.sampling, levels=levels)
    if args.memory:
        if args.method not in ("ddrs", "ancer", "rddrs"):
            raise ValueError("--memory applies to the data-dependent methods ddrs, ancer and rddrs")
        options["memory"] = True
    certifier = get_certifier(
        args.method,
        model,
        **options,
        batch_size=args.batch_size,
        input_shape=data.input_shape,
        num_classes=num_classes,
    )
    args.dataset_name = dataset_name
    return certifier, inputs, labels


def _certify_data(args: argparse.Namespace):
    """``(data, name, levels)`` of ``--image-folder`` / ``--imagenet-val``, or ``(None, None, None)`` for a
    built-in data set (loaded by the caller, which may take its name from the checkpoint)."""
    from manifoldcert.sources import image_folder, imagenet_val

    if args.image_folder is not None and args.imagenet_val is not None:
        raise ValueError("give at most one of --image-folder and --imagenet-val")
    if args.image_folder is not None:
        size = args.image_size
        return (
            image_folder(args.image_folder, image_size=size, center_crop=size),
            f"folder:{args.image_folder}",
            None,
        )
    if args.imagenet_val is not None:
        return imagenet_val(args.imagenet_val), f"imagenet-val:{args.imagenet_val}", None
    return None, None, None


def _parse_normalize(values: Sequence[str] | None) -> tuple[list[float], list[float]] | None:
    """``--normalize MEAN STD`` with comma-separated channel values, e.g. ``0.49,0.48,0.45 0.25,0.24,0.26``."""
    if not values:
        return None
    try:
        mean, std = ([float(v) for v in text.split(",")] for text in values)
    except ValueError as error:
        raise ValueError(
            f"--normalize takes MEAN STD as comma-separated numbers, got {' '.join(values)}"
        ) from error
    return mean, std


def _certifier_options(method: str, trained_noise, sigma: float | None) -> dict:
    """Keyword arguments that make ``method`` smooth with the noise the model was trained with."""
    from manifoldcert import noises
    from manifoldcert.noises.input_dependent import MeanAbsSigma

    if isinstance(trained_noise, noises.MeanScaledGaussian):
        if method != "input-dependent":
            raise ValueError(
                "this model was trained with input-dependent noise; certify it with --method input-dependent"
            )
        function = trained_noise.sigma_function  # σ(x) = scale·(mean|x| + offset)
        assert isinstance(function, MeanAbsSigma)  # what a MeanScaledGaussian holds
        return {"sigma": sigma if sigma is not None else function.scale, "offset": function.offset}
    if method == "dssn":
        # The certificate needs the offset vector the model was trained with.
        if not isinstance(trained_noise, noises.DerandomizedSplittingNoise):
            raise ValueError(
                "dssn needs a model trained with the derandomized-splitting noise: its checkpoint holds the "
                "offset seed (manifoldcert train --noise derandomized-splitting)"
            )
        sigma = sigma if sigma is not None else trained_noise.sigma
        config = (
            trained_noise.config()
        )  # the offset convention (or explicit vector) the model was trained with
        offsets = config.get("offsets", "torch")
        options = {"sigma": sigma, "levels": trained_noise.levels, "offsets": offsets}
        if isinstance(offsets, str):
            options["offset_seed"] = trained_noise.offset_seed
        return options
    if method in ("functional", "unicr"):
        # Both certify the training noise itself, whatever its family (σ may be overridden).
        if trained_noise is None:
            raise ValueError(f"{method} needs the training noise recorded in the checkpoint")
        config = trained_noise.config()
        if sigma is not None:
            config.pop("scale", None)
            config["sigma"] = sigma
        return {"noise": noises.from_config(config)}
    sigma = sigma if sigma is not None else getattr(trained_noise, "sigma", None)
    if sigma is None:
        raise ValueError("the checkpoint records no training noise; pass --sigma")
    return {"sigma": float(sigma)}


def _cmd_merge(args: argparse.Namespace) -> int:
    from manifoldcert.result_files import merge_results

    check_output_path(args.out)
    summary = merge_results(args.shards, args.out)
    print(
        f"wrote {args.out}: {summary['rows']} examples from {len(args.shards)} files, "
        f"{summary['duplicates']} identical duplicate rows dropped"
    )
    if summary["missing"]:
        shown = ", ".join(str(i) for i in summary["missing"][:20])
        more = f" (and {len(summary['missing']) - 20} more)" if len(summary["missing"]) > 20 else ""
        print(f"missing: {len(summary['missing'])} planned examples have no row: {shown}{more}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from manifoldcert.report import summarize

    high_probability = None if args.high_probability is None else tuple(args.high_probability)
    print(
        summarize(
            args.results,
            norm=args.norm,
            radii=args.radii,
            out_png=args.plot,
            high_probability=high_probability,
            sigmas=args.sigma,
        )
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from manifoldcert.demo import run_demo

    run_demo(
        args.out,
        n=args.n,
        max_count=args.max,
        epochs=args.epochs,
        device=_device(args.device),
        geometry_count=args.geometry_count,
    )
    return 0


_GEOMSTATS_NAMES = {"affine-invariant": "SPDAffineMetric", "log-euclidean": "SPDLogEuclideanMetric"}


def _cmd_bench(args: argparse.Namespace) -> int:
    from manifoldcert.bench import (
        bench_dssn,
        bench_estimator,
        bench_functional,
        bench_rddrs,
        bench_scheduler,
        bench_sound_sampling,
        bench_unicr,
    )

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {_device(args.device)}")
    result: Any  # each benchmark has its own result type, all with .line()
    if args.what == "dssn":
        for sigma in args.sigmas or (0.5, 3.5):
            print(
                bench_dssn(sigma, n_uniform=args.n, images=args.repeats, device=_device(args.device)).line()
            )
        return 0
    if args.what == "rddrs":
        results = bench_rddrs(steps=args.repeats, opt_samples=args.n, device=_device(args.device))
        for step in results:
            print(step.line())
        by_name = {step.metric: step for step in results}
        for name in ("affine-invariant", "log-euclidean"):
            theirs = by_name.get(f"geomstats:{_GEOMSTATS_NAMES[name]}")
            if name in by_name and theirs is not None:
                ratio = theirs.seconds_per_step / by_name[name].seconds_per_step
                print(f"{name}: geomstats / ours = {ratio:.2f} per step")
        return 0
    if args.what == "sequential":
        return _bench_sequential(args)
    if args.what == "sound-sampling":
        for sigma in args.sigmas or (0.25, 0.5, 1.0):
            for arch, shape in (("cnn", (1, 28, 28)), ("cnn", (3, 32, 32))):
                result = bench_sound_sampling(
                    sigma,
                    input_shape=shape,
                    arch=arch,
                    n=args.n,
                    batch_size=args.batch_size,
                    repeats=args.repeats,
                    device=_device(args.device),
                )
                print(result.line())
        return 0
    if args.what == "unicr":
        for noise_name, norm, params in (
            ("gaussian", "l2", {}),
            ("laplace", "l1", {}),
            ("general-normal", "l2", {"beta": 1.5}),
            ("general-normal", "l1", {"beta": 1.5}),
        ):
            result = bench_unicr(
                noise_name,
                norm,
                noise_params=params,
                images=args.repeats,
                n=args.n,
                device=_device(args.device),
            )
            print(result.line())
        return 0
    if args.what == "functional":
        for noise_name in ("zhang-l2", "zhang-mixed"):
            result = bench_functional(
                noise_name,
                k=700.0 if noise_name == "zhang-l2" else 8.0,
                n=args.n,
                images=args.repeats,
                batch_size=args.batch_size,
                device=_device(args.device),
            )
            print(result.line())
        return 0
    for arch, shape in (("cnn", (1, 28, 28)), ("mlp", (1, 8, 8))):
        result = bench_estimator(
            arch,
            shape,
            n=args.n,
            batch_size=args.batch_size,
            repeats=args.repeats,
            device=_device(args.device),
        )
        print(result.line())
    for arch, shape in (("cnn", (1, 28, 28)), ("mlp", (1, 8, 8))):
        print(bench_scheduler(arch, shape, batch_size=args.batch_size, device=_device(args.device)).line())
    return 0


#: The models ``bench sequential`` trains when no --checkpoints are given: (data set, arch, σ, epochs).
_SEQUENTIAL_BENCH_MODELS = (("mnist", "cnn", 0.25, 3), ("mnist", "cnn", 0.5, 3), ("digits", "mlp", 0.25, 30))


def _bench_sequential(args: argparse.Namespace) -> int:
    from manifoldcert import noises
    from manifoldcert.bench import bench_sequential
    from manifoldcert.data import load_dataset
    from manifoldcert.models import load_checkpoint
    from manifoldcert.train import train_checkpoint

    device = _device(args.device)
    paths = args.checkpoints
    if not paths:
        os.makedirs(args.checkpoint_dir, exist_ok=True)
        paths = []
        for dataset, arch, sigma, epochs in _SEQUENTIAL_BENCH_MODELS:
            path = os.path.join(args.checkpoint_dir, f"{dataset}_{arch}_sigma_{sigma}.pt")
            if not os.path.exists(path):
                train_checkpoint(
                    arch,
                    load_dataset(dataset, "train"),
                    noises.Gaussian(sigma),
                    path,
                    test=load_dataset(dataset, "test"),
                    epochs=epochs,
                    device=device,
                )
            paths.append(path)
    for path in paths:
        model, info = load_checkpoint(path, device=device)
        if info.noise.get("name") != "gaussian":
            raise ValueError(
                f"{path}: bench sequential needs a Gaussian-trained checkpoint, got {info.noise}"
            )
        test = load_dataset(info.dataset, "test")
        count = min(args.images, len(test.labels))
        inputs = test.inputs()[:count]
        result = bench_sequential(
            model,
            inputs,
            [int(y) for y in test.labels[:count]],
            name=f"{info.dataset} {info.arch}",
            sigma=float(info.noise["sigma"]),
            n=args.n,
            fixed_images=args.fixed_images,
            batch_size=args.batch_size,
            progress=not args.quiet,
        )
        print("\n".join(result.lines()), flush=True)
    return 0


def common(p: argparse.ArgumentParser) -> None:
    """``--device --root --seed``, which every command that runs a model takes."""
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--root", default=None, help="data root for mnist / fashion-mnist / cifar10")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    """The ``manifoldcert`` argument parser: one sub-command per task, each with its options."""
    parser = argparse.ArgumentParser(prog="manifoldcert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="train a base classifier: noise augmentation, consistency, MACER or SmoothAdv (--recipe)",
    )
    common(p)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--arch", default="mlp")
    p.add_argument("--noise", default="gaussian", help="noise name (manifoldcert.noises.available()) or none")
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument(
        "--offset-seed", type=int, default=0, help="seed of DSSN's offset vector (derandomized-splitting)"
    )
    p.add_argument(
        "--offsets",
        choices=("torch", "numpy-randomstate"),
        default="torch",
        help="how DSSN's offset vector is drawn from --offset-seed: torch's generator, or numpy's "
        "RandomState(seed).randint as Levine and Feizi's code does (derandomized-splitting)",
    )
    p.add_argument(
        "--offset", type=float, default=1.0, help="σ(x) = sigma·(mean|x| + offset) (mean-scaled-gaussian)"
    )
    p.add_argument("--k", type=float, default=0.0, help="exponent of ‖z‖^-k (zhang-l1/-l2/-linf/-mixed)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    recipes = p.add_argument_group(
        "recipe",
        "the training objective (manifoldcert.recipes); unset hyper-parameters take the paper's defaults",
    )
    recipes.add_argument(
        "--recipe",
        default="gaussian",
        choices=("gaussian", "consistency", "macer", "smoothadv"),
        help="gaussian: noise augmentation (Cohen et al. 2019); consistency (Jeong & Shin 2020); "
        "macer (Zhai et al. 2020); smoothadv (Salman et al. 2019)",
    )
    recipes.add_argument("--copies", type=int, default=None, help="m, noisy copies per example")
    recipes.add_argument("--lbd", type=float, default=None, help="λ (consistency, macer)")
    recipes.add_argument("--eta", type=float, default=None, help="η, the entropy weight (consistency)")
    recipes.add_argument("--margin", type=float, default=None, help="γ, the hinge margin (macer)")
    recipes.add_argument("--beta", type=float, default=None, help="β, the inverse temperature (macer)")
    recipes.add_argument(
        "--deferred-epochs", type=int, default=None, help="epochs before the radius term starts (macer)"
    )
    recipes.add_argument("--epsilon", type=float, default=None, help="ε, the l2 attack radius (smoothadv)")
    recipes.add_argument("--attack-steps", type=int, default=None, help="PGD steps (smoothadv)")
    recipes.add_argument("--warmup", type=int, default=None, help="epochs of ε warm-up (smoothadv)")
    p.add_argument(
        "--augment",
        choices=("none", "crop-flip"),
        default="none",
        help="crop-flip: pad 4, crop, flip (CIFAR)",
    )
    p.add_argument("--amp", action="store_true", help="mixed precision (float16 autocast), CUDA only")
    p.add_argument("--out", required=True, help="checkpoint path")
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("certify", help="certify a data set to a TSV (resumes an existing file)")
    _add_model_and_data_arguments(p)
    p.set_defaults(run=_cmd_certify)

    p = sub.add_parser(
        "predict",
        help="Cohen et al.'s PREDICT over a data set: a TSV of idx label predict correct time (abstain: -1)",
    )
    _add_model_and_data_arguments(p)
    p.set_defaults(run=_cmd_predict)

    p = sub.add_parser(
        "merge",
        help="join shard result files (certify --num-shards) into one: identical rows once, conflicting rows, "
        "other columns or other settings refused, missing examples reported",
    )
    p.add_argument("shards", nargs="+", help="the shard TSVs (each with its .json run description)")
    p.add_argument("--out", required=True, help="merged TSV (must not exist)")
    p.set_defaults(run=_cmd_merge)

    p = sub.add_parser(
        "report",
        help="smoothed and certified accuracy table, curves and robustness score from TSV files "
        "(manifoldcert's or Cohen et al.'s certify.py output)",
    )
    p.add_argument("results", nargs="+")
    p.add_argument(
        "--sigma",
        type=float,
        nargs="+",
        default=None,
        help="σ of each result file (one per file, or one for all) where the file does not record it, as "
        "Cohen et al.'s files do not",
    )
    p.add_argument("--norm", default="l2", choices=("l1", "l2", "linf"))
    p.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--plot", default=None, help="PNG path for the certified-accuracy curves")
    p.add_argument(
        "--high-probability",
        type=float,
        nargs=2,
        metavar=("ALPHA", "RHO"),
        default=None,
        help="also the smoothed classifier's certified accuracy that holds with probability 1 - RHO, for "
        "certificates at level ALPHA (Cohen et al.'s HighProbAccuracy)",
    )
    p.set_defaults(run=_cmd_report)

    p = sub.add_parser(
        "demo",
        help="train on digits, certify with cohen / laplace / uniform, ancer and rddrs; tables + plots",
    )
    p.add_argument("--out", default="results/demo")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--max", type=int, default=None, help="certify at most this many test points (all 360)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument(
        "--geometry-count", type=int, default=30, help="test points certified by ancer and rddrs (0: none)"
    )
    p.add_argument("--device", default=None)
    p.set_defaults(run=_cmd_demo)

    p = sub.add_parser("bench", help="benchmarks")
    p.add_argument(
        "what",
        choices=("estimator", "dssn", "functional", "rddrs", "sequential", "sound-sampling", "unicr"),
        help="estimator: certify vs forward passes; dssn: vs uniform; functional: the λ search's share; "
        "sequential: sequential vs fixed-n certification (--n is the cap, --images test images, the fixed "
        "run on the first --fixed-images); "
        "rddrs: time per ascent step at d = 784, ours vs geomstats (--repeats steps of --n samples); "
        "unicr: table build time and the lookup's cost; sound-sampling: cohen's floating-point-sound grid "
        "sampler vs randn per 10⁶ draws and per certification (--sigmas)",
    )
    p.add_argument("--n", type=int, default=10_000, help="samples (estimator) or uniform's samples (dssn)")
    p.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        default=None,
        help="σ values (dssn: 0.5 3.5; sound-sampling: 0.25 0.5 1)",
    )
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--images", type=int, default=500, help="test images (sequential)")
    p.add_argument(
        "--fixed-images", type=int, default=None, help="of them, certified with fixed n (sequential)"
    )
    p.add_argument("--checkpoints", nargs="+", default=None, help="Gaussian-trained checkpoints (sequential)")
    p.add_argument(
        "--checkpoint-dir",
        default="results/checkpoints",
        help="where bench sequential keeps the models it trains when no --checkpoints are given",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--device", default=None)
    p.set_defaults(run=_cmd_bench)
    return parser


def _add_model_and_data_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``certify`` and ``predict`` share: model, data, method and run options."""
    common(p)
    p.add_argument("--checkpoint", default=None, help="a manifoldcert checkpoint (or give --model)")
    p.add_argument(
        "--model",
        default=None,
        help="any classifier: package.module:factory, a TorchScript or torch.export file (needs --sigma)",
    )
    p.add_argument(
        "--normalize",
        nargs=2,
        metavar=("MEAN", "STD"),
        default=None,
        help="with --model: normalise inside the model, comma-separated per channel (σ stays in [0, 1] pixels)",
    )
    p.add_argument("--num-classes", type=int, default=None, help="with --model: its number of classes")
    p.add_argument(
        "--image-folder", default=None, help="certify an ImageFolder tree (class folders of images)"
    )
    p.add_argument("--image-size", type=int, default=None, help="resize + centre-crop --image-folder images")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader workers reading --image-folder / --imagenet-val images",
    )
    p.add_argument(
        "--imagenet-val", default=None, help="ImageNet's validation layout (wnid folders), 256 → 224 crop"
    )
    p.add_argument("--method", default="cohen")
    p.add_argument("--sigma", type=float, default=None, help="default: the checkpoint's training sigma")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's data set")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--metric",
        default=None,
        help="SPD metric of rddrs: affine-invariant, log-euclidean, bures-wasserstein or geomstats:<Class>",
    )
    p.add_argument("--norm", default="l2", help="threat model of unicr: l1, l2, linf or a number p > 0")
    p.add_argument("--cache-dir", default=None, help="folder for unicr's p_A → R tables")
    p.add_argument(
        "--dssn-radius",
        choices=("strict", "grid-inclusive"),
        default=None,
        help="dssn's radius rule: strict λ(p_A − p_B) (default) or the reference code's grid-inclusive one",
    )
    p.add_argument(
        "--sampling",
        choices=("float", "sound"),
        default=None,
        help="cohen's noise: float x + σ·randn (default) or sound, a Gaussian rounded to the data set's pixel "
        "grid with integer arithmetic, whose certificate holds in floating point",
    )
    p.add_argument(
        "--memory",
        action="store_true",
        help="memory-based certification for ddrs / ancer / rddrs (guaranteed)",
    )
    p.add_argument("--out", required=True, help="TSV output path")
    add_run_arguments(p)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``manifoldcert`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        if os.environ.get("MANIFOLDCERT_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

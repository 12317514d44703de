"""Load OpenMMLab configs (mmseg, mmpretrain, mmdet) and build their models on CPU, offline.

A model built here never downloads or loads a checkpoint: every ``pretrained``
and ``Pretrained`` ``init_cfg`` is dropped from the config, and weights come
from the modules' own initialisation. SyncBN becomes BN so the model runs on
CPU. The ``data_preprocessor`` is kept. Which library builds the model is the
config's task (see :mod:`cpd.mm.tasks`), found from the config itself.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config, ConfigDict
from torch import nn

from cpd.mm.shim import install_mmcv_shim

Size = tuple[int, int]

_SYNC_BN_TYPES = frozenset({"SyncBN", "MMSyncBN"})
_PRETRAINED_INIT_TYPES = frozenset({"Pretrained", "PretrainedInit"})
#: the libraries whose shipped configs a name can refer to, in the order a bare name tries them
CONFIG_LIBRARIES = ("mmseg", "mmpretrain", "mmdet")


def config_root(library: str) -> Path:
    """Find the configs shipped inside an installed OpenMMLab package.

    Args:
        library: one of :data:`CONFIG_LIBRARIES`.

    Returns:
        The package's ``.mim/configs`` folder.

    Raises:
        ValueError: ``library`` is not one of :data:`CONFIG_LIBRARIES`.
        ModuleNotFoundError: the package is not installed.
    """
    if library not in CONFIG_LIBRARIES:
        raise ValueError(f"unknown config library {library!r}; valid: {', '.join(CONFIG_LIBRARIES)}")
    spec = importlib.util.find_spec(library)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{library} is not installed (pip install -e '.[mm]')", name=library)
    return Path(spec.origin).parent / ".mim" / "configs"


def mmseg_config_root() -> Path:
    """Find the configs shipped inside the installed mmsegmentation package.

    Returns:
        The ``.mim/configs`` folder of the installed ``mmseg`` package.

    Raises:
        ModuleNotFoundError: mmsegmentation is not installed.
    """
    return config_root("mmseg")


def resolve_config(path_or_name: str | os.PathLike[str]) -> Path:
    """Turn a config file path or a shipped config name into a file path.

    Args:
        path_or_name: an existing file; or a name relative to a library's configs with its
            prefix, such as ``mmpretrain::resnet/resnet18_8xb32_in1k.py`` or
            ``mmdet::retinanet/retinanet_r18_fpn_1x_coco.py``; or a bare name such as
            ``segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py``, looked up in mmseg,
            then mmpretrain, then mmdet.

    Returns:
        The config file.

    Raises:
        FileNotFoundError: neither a file nor a shipped config has that name.
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    text = str(path_or_name)
    prefix, sep, name = text.partition("::")
    libraries = (prefix,) if sep else CONFIG_LIBRARIES
    if not sep:
        name = text
    if sep and prefix not in CONFIG_LIBRARIES:
        raise FileNotFoundError(
            f"config {text!r}: unknown library prefix {prefix!r}; valid: "
            + ", ".join(f"{lib}::" for lib in CONFIG_LIBRARIES)
        )
    looked = []
    for library in libraries:
        try:
            root = config_root(library)
        except ModuleNotFoundError:
            continue
        if (root / name).is_file():
            return root / name
        looked.append(str(root))
    raise FileNotFoundError(
        f"config {text!r} is neither a file nor a config shipped with "
        f"{' or '.join(libraries)} (looked under {', '.join(looked) or 'no installed library'})"
    )


def load_config(
    path_or_name: str | os.PathLike[str], cfg_options: Mapping[str, Any] | None = None
) -> Config:
    """Read an mmseg, mmpretrain or mmdet config.

    Args:
        path_or_name: see :func:`resolve_config`.
        cfg_options: dotted-key overrides merged into the config, as with
            mmseg's ``--cfg-options`` (e.g. ``{"model.decode_head.num_classes": 19}``).

    Returns:
        The parsed config.

    Raises:
        FileNotFoundError: the config cannot be found.
        cpd.safe_load.BadFileError: the config (or a file it inherits) does not parse or does not run
            (one line naming the file, the error and its line).
    """
    path = resolve_config(path_or_name)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as e:  # noqa: BLE001 - a config is Python: any error of its code is the file's fault
        raise config_error(path, e) from None
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    return cfg


def config_error(path: str | os.PathLike[str], error: BaseException) -> Exception:
    """The one-line error for a config file that mmengine could not read."""
    from cpd.safe_load import BadFileError

    if isinstance(error, FileNotFoundError):  # a missing _base_ file
        missing = error.filename or str(error)
        return FileNotFoundError(f"config {os.fspath(path)!r} inherits {missing!r}, which does not exist")
    if isinstance(error, SyntaxError):
        what = f"does not parse ({error.msg}, line {error.lineno})"
    else:
        what = f"fails when run ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
    return BadFileError(f"config {os.fspath(path)!r} {what}; expected an mmengine Python config")


def check_size(size: Any) -> Size:
    """Validate an input size.

    Args:
        size: a pair of positive integers ``(H, W)``.

    Returns:
        The size as a tuple of two ints.

    Raises:
        ValueError: ``size`` is not two positive integers.
    """
    try:
        h, w = size
    except (TypeError, ValueError):
        raise ValueError(f"size must be two integers (H, W), got {size!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise ValueError(f"size must be two positive integers (H, W), got {size!r}")
    return (h, w)


def model_config(cfg: Config, input_size: Size | None = None, registry: Any = None) -> ConfigDict:
    """Make the offline, CPU-ready model config of ``cfg``; ``cfg`` is unchanged.

    Args:
        cfg: a full config with a ``model`` section.
        input_size: when given, backbones with a fixed ``img_size`` (ViT, BEiT,
            MAE) are built for this size, so their position embeddings need no
            resizing, and the data preprocessor pads to it.
        registry: the ``MODELS`` registry that resolves the backbone type
            (mmseg's when None).

    Returns:
        A copy of ``cfg.model`` without checkpoint loading and with SyncBN as BN.

    Raises:
        KeyError: ``cfg`` has no ``model`` section.
        ValueError: ``input_size`` is not two positive integers.
    """
    if "model" not in cfg:
        raise KeyError("config has no 'model' section")
    model_cfg = copy.deepcopy(cfg.model)
    _drop_checkpoints_(model_cfg)
    _resolve_teacher_configs_(model_cfg)
    _sync_bn_cfg_to_bn_(model_cfg)
    if input_size is not None:
        size = check_size(tuple(input_size))
        backbone = model_cfg.get("backbone")
        if isinstance(backbone, Mapping):
            default = _img_size_default(backbone, registry or _registry())
            if default is not inspect.Parameter.empty:
                # Backbones declared with one int (LeViT, T2T-ViT) take square images as an int.
                square = isinstance(default, int) and size[0] == size[1]
                backbone["img_size"] = size[0] if square else size
        preprocessor = model_cfg.get("data_preprocessor")
        if isinstance(preprocessor, Mapping) and preprocessor.get("size") is not None:
            preprocessor["size"] = size
    return model_cfg


def input_channels(cfg_or_model: Config | nn.Module) -> int:
    """Count the channels of the images a config's or model's model takes.

    Args:
        cfg_or_model: a config or a built model.

    Returns:
        The data preprocessor's mean length (for a config, else the backbone's
        ``in_channels``); for a model, else the first convolution's when it takes 1 or
        3 channels; else 3.
    """
    if not isinstance(cfg_or_model, nn.Module):
        model_cfg = cfg_or_model.get("model", {})
        mean = model_cfg.get("data_preprocessor", {}).get("mean")
        if mean:
            return len(mean)
        return int(model_cfg.get("backbone", {}).get("in_channels", 3))
    preprocessor = getattr(cfg_or_model, "data_preprocessor", None)
    mean = getattr(preprocessor, "mean", None)
    if isinstance(mean, torch.Tensor) and mean.numel() > 0:
        return mean.numel()
    # A backbone's ``in_channels`` attribute is no guide (MobileNetV2 keeps its last width there).
    # A stem may rearrange pixels before its first convolution (YOLOX's Focus takes 4x3
    # channels): trust the first convolution only for grey or RGB images.
    first_conv = next((m for m in cfg_or_model.modules() if isinstance(m, nn.Conv2d)), None)
    return first_conv.in_channels if first_conv is not None and first_conv.in_channels in (1, 3) else 3


def sync_bn_to_bn_(module: nn.Module) -> nn.Module:
    """Replace every ``nn.SyncBatchNorm`` inside ``module`` by an ``nn.BatchNorm2d``.

    Args:
        module: the module to change in place.

    Returns:
        ``module``, or its replacement when ``module`` itself is a SyncBatchNorm.
    """
    if isinstance(module, nn.SyncBatchNorm):
        return _as_batch_norm(module)
    for name, child in module.named_children():
        new = sync_bn_to_bn_(child)
        if new is not child:
            setattr(module, name, new)
    return module


def _as_batch_norm(sync: nn.SyncBatchNorm) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(
        sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats
    )
    bn.load_state_dict(sync.state_dict())
    bn.train(sync.training)
    for param_name, param in bn.named_parameters():
        param.requires_grad_(getattr(sync, param_name).requires_grad)
    return bn


def _registry() -> Any:
    """Return mmseg's MODELS registry, filled and set as the default scope."""
    install_mmcv_shim()
    import mmseg.models  # noqa: F401  (importing fills the registry)
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    return MODELS


def _img_size_default(backbone_cfg: Mapping[str, Any], registry: Any) -> Any:
    """The backbone's ``img_size`` as configured or by default; ``Parameter.empty`` if it takes none."""
    if "img_size" in backbone_cfg:
        return backbone_cfg["img_size"]
    kind = backbone_cfg.get("type")
    cls = registry.get(kind) if isinstance(kind, str) else kind
    if not isinstance(cls, type):
        return inspect.Parameter.empty
    param = inspect.signature(cls.__init__).parameters.get("img_size")
    return inspect.Parameter.empty if param is None else param.default


def _walk(node: Any):
    """Yield every mapping nested in ``node`` (itself included)."""
    if isinstance(node, Mapping):
        yield node
        children = node.values()
    elif isinstance(node, (list, tuple)):
        children = node
    else:
        return
    for child in children:
        yield from _walk(child)


def _is_pretrained_init(init: Any) -> bool:
    return isinstance(init, Mapping) and init.get("type") in _PRETRAINED_INIT_TYPES


def _drop_checkpoints_(model_cfg: ConfigDict) -> None:
    for node in list(_walk(model_cfg)):
        if node.get("pretrained") is not None:
            node["pretrained"] = None
        if node.get("teacher_ckpt") is not None:  # mmdet's distilling detectors (LAD) load their teacher
            node["teacher_ckpt"] = None
        init = node.get("init_cfg")
        if _is_pretrained_init(init):
            node["init_cfg"] = None
        elif isinstance(init, (list, tuple)):
            kept = [item for item in init if not _is_pretrained_init(item)]
            node["init_cfg"] = kept or None


def _resolve_teacher_configs_(model_cfg: ConfigDict) -> None:
    """Point a distilling detector's ``teacher_config`` (mmdet's LD: ``'configs/gfl/...py'``, relative to the
    library's source tree) at the copy shipped inside the installed package, when the path does not exist."""
    for node in _walk(model_cfg):
        path = node.get("teacher_config")
        if not isinstance(path, str) or Path(path).exists() or not path.startswith("configs/"):
            continue
        for library in CONFIG_LIBRARIES:
            try:
                shipped = config_root(library).parent / path
            except ModuleNotFoundError:
                continue
            if shipped.exists():
                node["teacher_config"] = str(shipped)
                break


def _sync_bn_cfg_to_bn_(model_cfg: ConfigDict) -> None:
    for node in _walk(model_cfg):
        if node.get("type") in _SYNC_BN_TYPES:
            node["type"] = "BN"

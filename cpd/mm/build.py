"""Load mmsegmentation configs and build their models on CPU, offline.

A model built here never downloads or loads a checkpoint: every ``pretrained``
and ``Pretrained`` ``init_cfg`` is dropped from the config, and weights come
from the modules' own initialisation. SyncBN becomes BN so the model runs on
CPU. The ``data_preprocessor`` is kept.
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


def mmseg_config_root() -> Path:
    """Find the configs shipped inside the installed mmsegmentation package.

    Returns:
        The ``.mim/configs`` folder of the installed ``mmseg`` package.

    Raises:
        ModuleNotFoundError: mmsegmentation is not installed.
    """
    spec = importlib.util.find_spec("mmseg")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("mmsegmentation is not installed (pip install -e '.[mm]')")
    return Path(spec.origin).parent / ".mim" / "configs"


def resolve_config(path_or_name: str | os.PathLike[str]) -> Path:
    """Turn a config file path or a shipped mmseg config name into a file path.

    Args:
        path_or_name: an existing file, or a name relative to mmseg's configs
            such as ``segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py``
            (an ``mmseg::`` prefix is accepted).

    Returns:
        The config file.

    Raises:
        FileNotFoundError: neither a file nor a shipped config has that name.
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    root = mmseg_config_root()
    shipped = root / str(path_or_name).removeprefix("mmseg::")
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"config {str(path_or_name)!r} is neither a file nor a config shipped with "
        f"mmsegmentation (looked under {root})"
    )


def load_config(
    path_or_name: str | os.PathLike[str], cfg_options: Mapping[str, Any] | None = None
) -> Config:
    """Read an mmseg config.

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


def model_config(cfg: Config, input_size: Size | None = None) -> ConfigDict:
    """Make the offline, CPU-ready model config of ``cfg``; ``cfg`` is unchanged.

    Args:
        cfg: a full mmseg config with a ``model`` section.
        input_size: when given, backbones with a fixed ``img_size`` (ViT, BEiT,
            MAE) are built for this size, so their position embeddings need no
            resizing, and the data preprocessor pads to it.

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
    _sync_bn_cfg_to_bn_(model_cfg)
    if input_size is not None:
        size = check_size(tuple(input_size))
        backbone = model_cfg.get("backbone")
        if isinstance(backbone, Mapping) and _takes_img_size(backbone):
            backbone["img_size"] = size
        preprocessor = model_cfg.get("data_preprocessor")
        if isinstance(preprocessor, Mapping) and preprocessor.get("size") is not None:
            preprocessor["size"] = size
    return model_cfg


def build_model(cfg: Config | str | os.PathLike[str], input_size: Size | None = None) -> nn.Module:
    """Build an mmseg segmentor on CPU without loading any checkpoint.

    Args:
        cfg: a config, or a path or shipped name for :func:`load_config`.
        input_size: see :func:`model_config`.

    Returns:
        The segmentor (``EncoderDecoder`` and friends) on CPU, in train mode,
        with its ``data_preprocessor``.

    Raises:
        FileNotFoundError: the config cannot be found.
        ValueError: ``input_size`` is not two positive integers.
    """
    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    model_cfg = model_config(cfg, input_size)
    model = _registry().build(model_cfg)
    sync_bn_to_bn_(model)
    return model.to("cpu")


def example_inputs(
    cfg_or_model: Config | nn.Module, size: Size | None = None, batch: int = 2, seed: int = 0
) -> torch.Tensor:
    """Make a random, already normalised image batch for a config or model.

    Args:
        cfg_or_model: an mmseg config or a built segmentor.
        size: ``(H, W)``; by default the data preprocessor's ``size``, else 512x512.
        batch: batch size.
        seed: seed of the generator, so that calls are repeatable.

    Returns:
        A float tensor of shape ``(batch, C, H, W)``.

    Raises:
        ValueError: ``size`` or ``batch`` is not positive.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if isinstance(cfg_or_model, nn.Module):
        channels, default_size = _model_input_spec(cfg_or_model)
    else:
        channels, default_size = _config_input_spec(cfg_or_model)
    h, w = check_size(tuple(size) if size is not None else default_size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, h, w, generator=generator)


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


def _takes_img_size(backbone_cfg: Mapping[str, Any]) -> bool:
    if "img_size" in backbone_cfg:
        return True
    kind = backbone_cfg.get("type")
    cls = _registry().get(kind) if isinstance(kind, str) else kind
    if not isinstance(cls, type):
        return False
    return "img_size" in inspect.signature(cls.__init__).parameters


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
        init = node.get("init_cfg")
        if _is_pretrained_init(init):
            node["init_cfg"] = None
        elif isinstance(init, (list, tuple)):
            kept = [item for item in init if not _is_pretrained_init(item)]
            node["init_cfg"] = kept or None


def _sync_bn_cfg_to_bn_(model_cfg: ConfigDict) -> None:
    for node in _walk(model_cfg):
        if node.get("type") in _SYNC_BN_TYPES:
            node["type"] = "BN"


def _config_input_spec(cfg: Config) -> tuple[int, Size]:
    model_cfg = cfg.get("model", {})
    channels = model_cfg.get("backbone", {}).get("in_channels", 3)
    size = model_cfg.get("data_preprocessor", {}).get("size") or (512, 512)
    return int(channels), tuple(size)


def _model_input_spec(model: nn.Module) -> tuple[int, Size]:
    preprocessor = getattr(model, "data_preprocessor", None)
    size = getattr(preprocessor, "size", None) or (512, 512)
    mean = getattr(preprocessor, "mean", None)
    if isinstance(mean, torch.Tensor) and mean.numel() > 0:
        return mean.numel(), tuple(size)
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return (first_conv.in_channels if first_conv is not None else 3), tuple(size)

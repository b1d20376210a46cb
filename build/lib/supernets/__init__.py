"""Weight-sharing supernets: elastic ops, OFA-MobileNetV3 and NAS-Bench-201 supernets, export, BN recalibration."""

from __future__ import annotations

from supernets.base import SUPERNETS, Exported, Supernet, create_supernet, supernet_from_spec
from supernets.bn import bn_recalibration, recalibrate_bn, recalibrated
from supernets.export import LoadedSubnet, SubnetFormatError, export_onnx, load_subnet, save_subnet
from supernets.nb201 import NB201Supernet
from supernets.ofa_mbv3 import OFAMobileNetV3Supernet
from supernets.static import STATIC_BUILDERS, build_from_config, build_layer, build_network
from supernets.static_vit import StaticViT
from supernets.vit import ViTSupernet

__all__ = [
    "SUPERNETS", "Exported", "Supernet", "create_supernet", "supernet_from_spec", "bn_recalibration",
    "recalibrate_bn", "recalibrated", "LoadedSubnet", "SubnetFormatError", "export_onnx", "load_subnet",
    "save_subnet", "NB201Supernet", "OFAMobileNetV3Supernet", "STATIC_BUILDERS", "build_from_config",
    "build_layer", "build_network", "StaticViT", "ViTSupernet",
]

# Elastic quantisation (EQ-Net); importing registers the "quant" supernet and the "fake_quant" static builder.
from supernets import quant as _quant  # noqa: E402,F401
